//! `tessera bench finetune`: fine-tuning throughput (examples/s, forward + backward + AdamW),
//! measured as `scripts/finetune_hf_speed.py` measures the Hugging Face + PyTorch loop: the same
//! model, data, batch size and maximum length, shuffled batches, warm-up steps not timed.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;
use tessera::tasks::data::{read_conll, read_labelled};
use tessera::tasks::finetune::{finetune, Event, FinetuneOptions, TaskData};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Task {
    Classify,
    Ner,
}

#[derive(Args, Debug)]
pub struct BenchFinetuneArgs {
    /// Model name (in the cache) or directory.
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    #[arg(long, value_enum, default_value = "classify")]
    task: Task,
    /// Training data (JSONL `{"text", "label"}` for classify, CoNLL for ner).
    #[arg(long, default_value = "../shared/data/classify/fine-foods/train.jsonl")]
    data: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Timed optimizer steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: BenchFinetuneArgs) -> Result<()> {
    if a.steps == 0 || a.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let dir = tessera::hub::resolve(&a.model)?;
    // A few examples stand in as the dev set: the evaluation after the last step is not timed.
    let need = (a.warmup + a.steps) * a.batch;
    let data = match a.task {
        Task::Classify => {
            let mut all = read_labelled(&a.data)?;
            let dev = all.split_off(all.len().saturating_sub(a.batch));
            TaskData::Classify { train: all, dev }
        }
        Task::Ner => {
            let mut all = read_conll(&a.data)?;
            let dev = all.split_off(all.len().saturating_sub(a.batch));
            TaskData::Ner { train: all, dev }
        }
    };
    let opts = FinetuneOptions {
        epochs: 1,
        batch_size: a.batch,
        max_len: a.max_len,
        max_steps: Some(a.warmup + a.steps),
        seed: a.seed,
        ..FinetuneOptions::default()
    };
    let out = std::env::temp_dir().join(format!("tessera-bench-finetune-{}", std::process::id()));
    let (mut t0, mut t1, mut last_loss) = (None, None, f64::NAN);
    let mut on_event = |e: Event<'_>| {
        if let Event::Step { step, loss, .. } = e {
            if step == a.warmup {
                t0 = Some(Instant::now());
            }
            if step == a.warmup + a.steps {
                t1 = Some(Instant::now());
            }
            last_loss = loss;
        }
    };
    let res = finetune(&dir, &data, &opts, &out, None, &mut on_event);
    let _ = std::fs::remove_dir_all(&out);
    res?;
    let (Some(t0), Some(t1)) = (t0, t1) else {
        bail!("the training set is too small for {need} examples (warm-up + timed steps)");
    };
    let eps = (a.steps * a.batch) as f64 / (t1 - t0).as_secs_f64();
    let peak = tessera::train::bench::peak_rss_mib().unwrap_or(f64::NAN);
    println!(
        "steps: {}  batch: {}  max_len: {}",
        a.steps, a.batch, a.max_len
    );
    println!("final loss: {last_loss:.4}");
    println!("peak_rss_mib: {peak:.1}");
    println!("examples_per_s: {eps:.2}");
    Ok(())
}
