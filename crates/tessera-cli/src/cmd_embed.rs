//! `tessera embed` and `tessera similar`: sentence embeddings and semantic search.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use tessera::tasks::data::read_texts;
use tessera::tasks::embed::{top_k, Embedder};
use tessera::Device;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model name (in the cache) or directory.
    #[arg(long)]
    model: String,
    /// One text per line, or JSONL with a `text` field.
    #[arg(long)]
    input: PathBuf,
    /// Write here instead of stdout: JSONL, or NumPy when the name ends in `.npy`.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts per forward pass (grouped by length).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

#[derive(Args, Debug)]
pub struct SimilarArgs {
    /// Model name (in the cache) or directory.
    #[arg(long)]
    model: String,
    /// The texts to search: one per line, or JSONL with a `text` field.
    #[arg(long)]
    corpus: PathBuf,
    /// The query text.
    #[arg(long)]
    query: String,
    /// How many results.
    #[arg(short, long, default_value_t = 5)]
    k: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

fn load(spec: &str) -> Result<Embedder> {
    let dir = tessera::hub::resolve(spec)?;
    Embedder::load(&dir, &Device::Cpu).with_context(|| format!("loading model {spec}"))
}

pub fn run_embed(a: EmbedArgs) -> Result<()> {
    let texts = read_texts(&a.input)?;
    let emb = load(&a.model)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vecs = emb.embed(&refs, a.batch_size)?;
    match &a.output {
        Some(p) if p.extension().is_some_and(|e| e == "npy") => {
            tessera::tasks::npy::write_npy(p, &vecs)?;
        }
        Some(p) => {
            let mut s = String::new();
            for v in &vecs {
                s.push_str(&serde_json::json!({ "embedding": v }).to_string());
                s.push('\n');
            }
            std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for v in &vecs {
                writeln!(out, "{}", serde_json::json!({ "embedding": v }))?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

pub fn run_similar(a: SimilarArgs) -> Result<()> {
    if a.query.trim().is_empty() {
        bail!("--query is empty");
    }
    let corpus = read_texts(&a.corpus)?;
    let emb = load(&a.model)?;
    let refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let vecs = emb.embed(&refs, a.batch_size)?;
    let q = emb.embed(&[a.query.as_str()], 1)?;
    let mut out = std::io::stdout().lock();
    for (rank, (i, score)) in top_k(&q[0], &vecs, a.k).into_iter().enumerate() {
        let line = serde_json::json!({
            "rank": rank + 1, "score": score, "index": i, "text": corpus[i],
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
