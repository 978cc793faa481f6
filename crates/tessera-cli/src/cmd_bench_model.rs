//! `tessera bench --model M`: prefill and decode throughput of a generation model, measured the
//! way `shared/bench/llama_cpp_speed.py` measures llama.cpp (same prompts, same final lines).
//!
//! - prefill: a 512-token prompt fed into an empty cache, logits of the last token only;
//!   tokens/s = 512 / time.
//! - decode: a short chat prompt fed untimed, then 128 single-token steps, each followed by an
//!   argmax (greedy; EOS does not stop it); tokens/s = 128 / time. Also after the 512-token prompt.
//!
//! Each is run once untimed, then `--reps` times; medians are reported. The cache holds 1024
//! positions (llama.cpp's n_ctx in the peer script).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tessera::generate::sampler::argmax;
use tessera::tokenizer::chat::Message;

/// The paragraph the peers' prefill prompt repeats (`bench_prompts.json`, `prefill_text`).
const PARAGRAPH: &str = "The harbour town woke slowly on winter mornings. Fishermen checked their nets by lamplight, the baker opened his shutters before dawn, and the first ferry of the day sounded its horn as it left the pier. Children walked to school along the sea wall, counting the gulls that followed the boats. In the afternoon the market square filled with stalls selling bread, cheese, apples, and woollen scarves, and old friends argued about the weather over cups of strong coffee. When the lighthouse began to turn in the evening, the streets grew quiet again, and only the sound of the waves against the rocks remained.";
/// The user message of the peers' decode prompt.
const REQUEST: &str =
    "Write a short story about a lighthouse keeper who finds a message in a bottle.";
const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[derive(Args, Debug)]
pub struct BenchModelArgs {
    /// A known model name, a .gguf file or a model directory.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Prompt tokens for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prefill_tokens: usize,
    /// Decode steps.
    #[arg(long, default_value_t = 128)]
    decode_tokens: usize,
    /// Take the prompt ids from the peers' bench_prompts.json (`prefill_ids`,
    /// `decode_prompt_ids`) instead of tokenizing the same texts here.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Also measure the aggregate decode throughput of N sequences stepped together (one
    /// batched product per weight per step, as `tessera serve` runs its requests).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ids_of(v: &serde_json::Value, key: &str) -> Result<Vec<u32>> {
    v[key]
        .as_array()
        .with_context(|| format!("'{key}' missing"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|i| i as u32)
                .with_context(|| format!("'{key}' holds a non-integer"))
        })
        .collect()
}

pub fn run(a: BenchModelArgs) -> Result<()> {
    anyhow::ensure!(a.reps > 0, "--reps must be at least 1");
    anyhow::ensure!(
        a.prefill_tokens > 0 && a.decode_tokens > 0,
        "token counts must be positive"
    );
    let path = tessera::hub::resolve(&a.model)?;
    let t_load = Instant::now();
    let (model, tok) = tessera::generate::load(&path)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let (prefill, short) = match &a.prompts {
        Some(p) => {
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )?;
            let mut pre = ids_of(&v, "prefill_ids")?;
            pre.truncate(a.prefill_tokens);
            (pre, ids_of(&v, "decode_prompt_ids")?)
        }
        None => {
            let mut text = String::new();
            let mut pre = Vec::new();
            while pre.len() < a.prefill_tokens {
                text.push_str(if text.is_empty() { "" } else { " " });
                text.push_str(PARAGRAPH);
                pre = tok.tokenizer.encode(&text)?;
            }
            pre.truncate(a.prefill_tokens);
            let msgs = [
                Message::new("system", SYSTEM),
                Message::new("user", REQUEST),
            ];
            let short = tok
                .prompt_ids(&msgs, true)
                .unwrap_or_else(|_| pre[..16.min(pre.len())].to_vec());
            (pre, short)
        }
    };
    anyhow::ensure!(
        prefill.len() == a.prefill_tokens,
        "the prompt has only {} tokens",
        prefill.len()
    );
    let cap = 1024usize
        .max(prefill.len() + a.decode_tokens)
        .min(model.cfg.max_position_embeddings);
    let mut st = model.new_state(cap)?;

    let mut prefill_s = Vec::new();
    for rep in 0..=a.reps {
        st.clear();
        let t = Instant::now();
        model.forward(&mut st, &prefill)?;
        if rep > 0 {
            prefill_s.push(t.elapsed().as_secs_f64());
        }
    }
    let mut decode = |prompt: &[u32]| -> Result<f64> {
        let mut times = Vec::new();
        for rep in 0..=a.reps {
            st.clear();
            let mut next = argmax(model.forward(&mut st, prompt)?);
            let t = Instant::now();
            for _ in 0..a.decode_tokens {
                next = argmax(model.forward(&mut st, &[next])?);
            }
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Ok(median(times))
    };
    let decode_short = decode(&short)?;
    let decode_long = decode(&prefill)?;
    // N sequences decoded together: the short prompt, each with its own cache, stepped at once.
    let mut batched_tps = None;
    if a.parallel > 1 {
        let n = a.parallel;
        let cap = (short.len() + a.decode_tokens + 1).min(model.cfg.max_position_embeddings);
        let mut states = (0..n)
            .map(|_| model.new_state(cap))
            .collect::<tessera::Result<Vec<_>>>()?;
        let mut batch = model.new_batch();
        let mut times = Vec::new();
        for rep in 0..=a.reps {
            let mut next = Vec::with_capacity(n);
            for st in states.iter_mut() {
                st.clear();
                next.push(argmax(model.forward(st, &short)?));
            }
            let t = Instant::now();
            for _ in 0..a.decode_tokens {
                let mut refs: Vec<_> = states.iter_mut().collect();
                let logits = model.step(&mut batch, &mut refs, &next)?;
                let v = model.cfg.vocab_size;
                for (i, x) in next.iter_mut().enumerate() {
                    *x = argmax(&logits[i * v..(i + 1) * v]);
                }
            }
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        batched_tps = Some((n * a.decode_tokens) as f64 / median(times));
    }
    let prefill_tps = prefill.len() as f64 / median(prefill_s.clone());
    let decode_tps = a.decode_tokens as f64 / decode_short;
    let decode_long_tps = a.decode_tokens as f64 / decode_long;
    let peak = tessera::train::bench::peak_rss_mib().unwrap_or(f64::NAN);
    let v = serde_json::json!({
        "engine": "tessera",
        "cpu": tessera::util::cpu::model_name(),
        "model": path.display().to_string(),
        "backend": model.describe(),
        "load_s": load_s,
        "prefill_tokens": prefill.len(),
        "prefill_s": prefill_s,
        "decode_prompt_tokens": short.len(),
        "decode_tokens": a.decode_tokens,
        "decode_tokens_per_s_after_512": decode_long_tps,
        "reps": a.reps,
    });
    println!("{v}");
    println!(
        "decode_after_{}_tokens_per_s: {decode_long_tps:.1}",
        prefill.len()
    );
    println!("prefill_tokens_per_s: {prefill_tps:.1}");
    println!("decode_tokens_per_s: {decode_tps:.1}");
    if let Some(b) = batched_tps {
        println!(
            "decode_{}_parallel_tokens_per_s: {b:.1} ({:.2}x one sequence)",
            a.parallel,
            b / decode_tps
        );
    }
    println!("peak_rss_mib: {peak:.1}");
    Ok(())
}
