//! `tessera bench ...`

use anyhow::Result;
use clap::{Args, Subcommand};
use tessera::train::bench::{bench_train, peak_rss_mib, BenchTrainOptions};

#[path = "cmd_bench_quant.rs"]
mod cmd_bench_quant;

#[path = "cmd_bench_model.rs"]
mod cmd_bench_model;

/// `tessera bench [--model M ...] | bench <train|embed|quant> ...`
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    #[command(flatten)]
    model: cmd_bench_model::BenchModelArgs,
}

impl BenchArgs {
    /// Training, fine-tuning and embedding benchmarks run on the tensor engine.
    pub fn is_tensor_workload(&self) -> bool {
        matches!(
            self.cmd,
            Some(BenchCmd::Train(_) | BenchCmd::Embed(_) | BenchCmd::Finetune(_))
        )
    }

    /// Benchmarks that run as one data-parallel job across ranks (`mpirun -np N tessera bench
    /// train`).
    pub fn is_distributed(&self) -> bool {
        matches!(self.cmd, Some(BenchCmd::Train(_)))
    }
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Training throughput of the GPT in the peers' train_gpt_torch.py (same flags, same final lines).
    Train(BenchTrainArgs),
    /// Sentence-embedding throughput, as the peers' st_speed.py measures it.
    Embed(crate::cmd_bench_embed::BenchEmbedArgs),
    /// Fine-tuning throughput of an encoder (classification or NER), as scripts/finetune_hf_speed.py measures the PyTorch loop.
    Finetune(crate::cmd_bench_finetune::BenchFinetuneArgs),
    /// Quantized mat-vec / mat-mat speed on SmolLM2-135M's shapes (GFLOP/s, GB/s) per type and threads.
    Quant(cmd_bench_quant::BenchQuantArgs),
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// The layout: gpt2 (the peers' reference GPT) or llama (RMSNorm, rotary, GQA, SwiGLU, as
    /// scripts/train_torch.py --arch llama).
    #[arg(long, default_value = "gpt2", value_parser = ["gpt2", "llama"])]
    arch: String,
    /// Llama: key/value heads (default: half the query heads).
    #[arg(long)]
    n_kv_head: Option<usize>,
    /// Llama: SwiGLU width.
    #[arg(long, default_value_t = 704)]
    n_inner: usize,
    #[arg(long, default_value_t = 10000.0)]
    rope_theta: f64,
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    #[arg(long, default_value_t = 4)]
    n_layer: usize,
    #[arg(long, default_value_t = 4)]
    n_head: usize,
    #[arg(long, default_value_t = 256)]
    n_embd: usize,
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    #[arg(long, default_value_t = 0.95)]
    beta2: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// 0 = off.
    #[arg(long, default_value_t = 0.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Biases in Linear/LayerNorm (--no-bias to drop them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    bias: bool,
    #[arg(long = "no-bias")]
    no_bias: bool,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let Some(cmd) = a.cmd else {
        return cmd_bench_model::run(a.model);
    };
    match cmd {
        BenchCmd::Embed(a) => crate::cmd_bench_embed::run(a),
        BenchCmd::Finetune(a) => crate::cmd_bench_finetune::run(a),
        BenchCmd::Quant(a) => cmd_bench_quant::run(a),
        BenchCmd::Train(a) => {
            let opts = BenchTrainOptions {
                arch: a.arch,
                n_kv_head: a.n_kv_head,
                n_inner: a.n_inner,
                rope_theta: a.rope_theta,
                vocab_size: a.vocab_size,
                n_layer: a.n_layer,
                n_head: a.n_head,
                n_embd: a.n_embd,
                block_size: a.block_size,
                batch_size: a.batch_size,
                lr: a.lr,
                beta1: a.beta1,
                beta2: a.beta2,
                weight_decay: a.weight_decay,
                grad_clip: a.grad_clip,
                dropout: a.dropout,
                bias: a.bias && !a.no_bias,
                steps: a.steps,
                warmup: a.warmup,
                seed: a.seed,
            };
            let r = bench_train(&opts)?;
            let peak = peak_rss_mib().unwrap_or(f64::NAN);
            let threads = std::env::var("RAYON_NUM_THREADS").ok();
            let v = serde_json::json!({"engine": "tessera", "cpu": tessera::util::cpu::model_name(), "options": opts, "result": r,
                "peak_rss_mib": peak, "threads": threads});
            if let Some(p) = &a.json_out {
                std::fs::write(p, v.to_string())?;
            }
            println!("{v}");
            println!("tokens_per_s: {:.1}", r.tokens_per_s);
            println!("peak_rss_mib: {:.1}", peak);
            Ok(())
        }
    }
}
