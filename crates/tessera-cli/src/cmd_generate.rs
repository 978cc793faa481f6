//! `tessera generate`

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::sync::atomic::Ordering;
use tessera::generate::{generate, SamplingParams};

/// Sampling flags shared by the generating commands.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below min-p × the top probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalize tokens already seen (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop at this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
        };
        p.validate()?;
        Ok(p)
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A `.gguf` file, a model directory (Hugging Face layout, or a run directory of `tessera train`), or a known model name.
    #[arg(long)]
    model: String,
    /// A LoRA adapter directory (adapter_config.json + adapter_model.safetensors, PEFT's layout)
    /// merged into the model's weights after loading; refused if trained on another model.
    #[arg(long, value_name = "DIR")]
    adapter: Option<std::path::PathBuf>,
    /// The prompt text.
    #[arg(long, default_value = "")]
    prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Send the prompt as it is. Without it, a model with a chat template (e.g. SmolLM2-Instruct)
    /// gets the prompt as one user message through its template, with the assistant's turn
    /// opened; models without a template always get the raw prompt.
    #[arg(long)]
    raw: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let (model, tok) = tessera::generate::load_with_adapter(
        &tessera::hub::resolve(&a.model)?,
        &a.model,
        a.adapter.as_deref(),
    )?;
    let cfg = &model.cfg;
    let templated = !a.raw && !a.prompt.is_empty() && tok.template().is_ok();
    let mut ids = if templated {
        let msgs = [tessera::tokenizer::chat::Message::new(
            "user",
            a.prompt.as_str(),
        )];
        tok.prompt_ids(&msgs, true)?
    } else {
        tok.tokenizer.encode(&a.prompt)?
    };
    let tok = tok.tokenizer;
    if ids.is_empty() {
        // Nothing to condition on: start from the beginning-of-text token.
        let start = cfg
            .bos_token_id
            .or(cfg.eos_token_id)
            .or(tok.eos_id())
            .unwrap_or(0);
        ids.push(start);
    }
    let stop = crate::interrupt_flag();
    let mut out = std::io::stdout().lock();
    let json = a.json;
    if !json && !templated {
        write!(out, "{}", a.prompt)?;
        out.flush()?;
    }
    let t0 = std::time::Instant::now();
    let g = generate(&model, &tok, &ids, &params, |piece| {
        if !json {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        }
        !stop.load(Ordering::SeqCst)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    if json {
        let v = serde_json::json!({"text": g.text, "ids": g.ids, "finish_reason": g.finish_reason,
            "prompt_tokens": g.prompt_tokens, "completion_tokens": g.ids.len()});
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
        eprintln!(
            "[{} tokens, {:.1} tok/s, {:?}]",
            g.ids.len(),
            g.ids.len() as f64 / secs.max(1e-9),
            g.finish_reason
        );
    }
    Ok(())
}
