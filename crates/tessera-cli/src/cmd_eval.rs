//! `tessera eval ...`

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tessera::train::data::encode_long;
use tessera::train::evaluate_tokens;

#[derive(Subcommand, Debug)]
pub enum EvalCmd {
    /// Per-token perplexity and bits per character of a language model on a text.
    Perplexity(PerplexityArgs),
    /// Greedy answers of a chat model (optionally with a LoRA adapter) against reference turns:
    /// exact match, and label accuracy with --labels.
    Chat(crate::cmd_sft::EvalChatArgs),
    #[command(flatten)]
    Metrics(crate::eval_metrics::MetricsCommand),
}

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// A `.gguf` file, a model directory (Hugging Face layout, or a run directory of `tessera train`), or a known model name.
    #[arg(long)]
    model: String,
    /// UTF-8 text to score.
    #[arg(long)]
    data: PathBuf,
    /// Tokens per window (default: the model's context length).
    #[arg(long)]
    block: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Perplexity(a) => perplexity(a),
        EvalCmd::Chat(a) => crate::cmd_sft::eval_chat(a),
        EvalCmd::Metrics(m) => crate::eval_metrics::run(m),
    }
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    // The same model and arithmetic as generation and chat on this file.
    let (model, tok) = tessera::generate::load(&tessera::hub::resolve(&a.model)?)?;
    let tok = tok.tokenizer;
    let text = tessera::error::read_text(&a.data)?;
    if text.is_empty() {
        bail!("{}: the file is empty", a.data.display());
    }
    // The first token is predicted from the beginning-of-text token, so every character is scored.
    let start = model
        .cfg
        .bos_token_id
        .or(model.cfg.eos_token_id)
        .or(tok.eos_id())
        .unwrap_or(0);
    let mut ids = vec![start];
    ids.extend(encode_long(&tok, &text)?);
    let block = a.block.unwrap_or(model.cfg.max_position_embeddings);
    if block == 0 {
        bail!("--block must be positive");
    }
    let e = evaluate_tokens(&model, &ids, text.chars().count(), block, a.batch, 0)?;
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        println!("tokens:          {}", e.tokens);
        println!("characters:      {}", e.chars);
        println!("loss:            {:.6} nats/token", e.loss);
        println!("perplexity:      {:.4}", e.perplexity);
        println!("nats per char:   {:.6}", e.nats_per_char);
        println!("bits per char:   {:.6}", e.bits_per_char);
    }
    Ok(())
}
