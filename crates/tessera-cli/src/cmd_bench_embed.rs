//! `tessera bench embed`: sentence-embedding throughput on the peers' inputs (the `st_sentences`
//! of `bench_prompts.json`), measured as `st_speed.py` measures sentence-transformers.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tessera::tasks::embed::Embedder;
use tessera::Device;

#[derive(Args, Debug)]
pub struct BenchEmbedArgs {
    /// Model name (in the cache) or directory.
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// The shared inputs.
    #[arg(long, default_value = "../shared/bench/bench_prompts.json")]
    prompts: PathBuf,
    /// Sentences to embed.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

pub fn run(a: BenchEmbedArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.prompts)
        .with_context(|| format!("reading {}", a.prompts.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let all: Vec<String> = v["st_sentences"]
        .as_array()
        .context("bench_prompts.json has no st_sentences list")?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    if a.n == 0 || a.n > all.len() || a.reps == 0 {
        bail!("--n must be in 1..={} and --reps at least 1", all.len());
    }
    let sents: Vec<&str> = all[..a.n].iter().map(String::as_str).collect();
    let dir = tessera::hub::resolve(&a.model)?;
    let emb = Embedder::load(&dir, &Device::Cpu)?;
    emb.embed(&sents[..sents.len().min(64)], a.batch)?; // warm-up
    let tokens: usize = emb.encode_ids(&sents)?.iter().map(Vec::len).sum();
    let mut times = Vec::with_capacity(a.reps);
    for _ in 0..a.reps {
        let t0 = Instant::now();
        let out = emb.embed(&sents, a.batch)?;
        times.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let sps = a.n as f64 / median;
    let peak = tessera::train::bench::peak_rss_mib().unwrap_or(f64::NAN);
    let threads = std::env::var("RAYON_NUM_THREADS").ok();
    let j = serde_json::json!({"engine": "tessera", "cpu": tessera::util::cpu::model_name(), "n": a.n, "batch": a.batch, "reps": a.reps,
        "times_s": times, "sentences_per_s": sps, "tokens_per_s": tokens as f64 / median,
        "tokens": tokens, "peak_rss_mib": peak, "threads": threads});
    if let Some(p) = &a.json_out {
        std::fs::write(p, j.to_string())?;
    }
    println!("{j}");
    println!("sentences_per_s: {sps:.1}");
    println!("peak_rss_mib: {peak:.1}");
    Ok(())
}
