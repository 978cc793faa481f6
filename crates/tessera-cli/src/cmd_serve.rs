//! `tessera serve`: the OpenAI-compatible server (crate `tessera-serve`).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A known model name (fetched on first use), a .gguf file or a model directory.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Address to listen on (loopback by default; 0.0.0.0 exposes the server to the network).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/*, /metrics, /tokenize and /detokenize.
    #[arg(long, conflicts_with = "api_key_file")]
    api_key: Option<String>,
    /// Read the API key from this file (first line).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Sequences decoded together (each has its own KV cache of --ctx tokens).
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Context per sequence, in tokens (at most the model's).
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// Choices that may wait for a free sequence before requests get 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// An encoder model for /v1/embeddings (e.g. all-minilm-l6-v2).
    #[arg(long)]
    embedding_model: Option<String>,
    /// A LoRA adapter directory (adapter_config.json + adapter_model.safetensors, PEFT's layout)
    /// merged into the model at load.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Seconds in-flight requests may run after Ctrl-C / SIGTERM.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let api_key = match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading the API key file {}", f.display()))?;
            let k = text.lines().next().unwrap_or("").trim().to_string();
            anyhow::ensure!(!k.is_empty(), "{}: the API key file is empty", f.display());
            Some(k)
        }
        (None, None) => None,
    };
    if let Some(k) = &api_key {
        anyhow::ensure!(!k.is_empty(), "--api-key must not be empty");
    }
    tessera_serve::run(tessera_serve::ServeOptions {
        model: a.model,
        host: a.host,
        port: a.port,
        api_key,
        parallel: a.parallel,
        ctx: a.ctx,
        queue: a.queue,
        embedding_model: a.embedding_model,
        adapter: a.adapter,
        drain: std::time::Duration::from_secs(a.drain_secs),
        ..Default::default()
    })
}
