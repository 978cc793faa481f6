//! `tessera finetune chat`: supervised fine-tuning of a chat model (LoRA or full).

use crate::progress::say;
use anyhow::{bail, Result};
use clap::Args;
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::time::Duration;
use tessera::tasks::sft::{finetune_chat, Event, SftOptions, SftRun};

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The chat model: a known name (smollm2-135m-instruct), a `.gguf` file or a Hugging Face
    /// directory. A GGUF base stays quantized in memory under LoRA.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Training data: JSONL `{"messages": [...]}` or `{"prompt", "completion"}`.
    #[arg(long, visible_alias = "train")]
    data: PathBuf,
    /// Dev data (same format); without it, --dev-fraction of --data is held out.
    #[arg(long)]
    dev: Option<PathBuf>,
    #[arg(long, default_value_t = 0.1)]
    dev_fraction: f64,
    /// Output directory: the adapter (PEFT layout) or the full model, best/, checkpoint/,
    /// metrics.jsonl, loss.png.
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f64,
    /// Projections adapted in every block: q,k,v,o,gate,up,down (or PEFT names, or `all`).
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    lora_targets: Vec<String>,
    /// Fine-tune every weight (on the dequantized model) instead of LoRA adapters.
    #[arg(long)]
    full: bool,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak learning rate [default: 2e-4 with LoRA, 2e-5 full].
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.03)]
    warmup_ratio: f64,
    /// Longest example in tokens (longer ones are errors, or skipped with --skip-invalid).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Evaluate every this many steps (0: after every epoch).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Stop after this many optimizer steps.
    #[arg(long, default_value_t = 0)]
    max_steps: usize,
    /// Stop after this many minutes of training (evaluations not counted).
    #[arg(long)]
    max_time: Option<f64>,
    /// Leave out bad lines (invalid JSON, unknown role, no assistant turn, too long) and count
    /// them, instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: ChatArgs) -> Result<()> {
    if a.out.exists() && !a.out.is_dir() {
        bail!("--out {} exists and is not a directory", a.out.display());
    }
    let model_path = tessera::hub::resolve(&a.model)?;
    let full = a.full;
    let opts = SftOptions {
        lora_rank: if full { 0 } else { a.lora_rank },
        lora_alpha: a.lora_alpha,
        lora_targets: a.lora_targets.clone(),
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr.unwrap_or(if full { 2e-5 } else { 2e-4 }),
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        max_steps: a.max_steps,
        max_len: a.max_len,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        dev_fraction: a.dev_fraction,
        grad_clip: 1.0,
        skip_invalid: a.skip_invalid,
        seed: a.seed,
    };
    let stop = crate::interrupt_flag();
    let run = SftRun {
        model: a.model.clone(),
        model_path,
        train: a.data.clone(),
        dev: a.dev.clone(),
        out: a.out.clone(),
        resume: a.resume,
        max_time: a.max_time.map(|m| Duration::from_secs_f64(m * 60.0)),
        stop: Some(&stop),
    };
    let bar = crate::progress::steps_bar(1);
    let mut log_every = 1;
    let mut on_event = |e: Event<'_>| match e {
        Event::Start {
            train,
            dev,
            skipped,
            trainable,
            total_steps,
            resumed_at,
        } => {
            bar.set_length(total_steps as u64);
            bar.set_position(resumed_at as u64);
            log_every = (total_steps / 20).max(1);
            let what = if full {
                "every weight".to_string()
            } else {
                format!(
                    "LoRA r={} alpha={} on {}",
                    a.lora_rank,
                    a.lora_alpha,
                    a.lora_targets.join(",")
                )
            };
            say(
                &bar,
                format!(
                    "{train} training / {dev} dev conversations, {total_steps} steps; training \
                     {what}: {trainable} parameters{}",
                    if resumed_at > 0 {
                        format!("; resumed at step {resumed_at}")
                    } else {
                        String::new()
                    }
                ),
            );
            if !skipped.is_empty() {
                say(
                    &bar,
                    format!(
                        "skipped {} lines (--skip-invalid); first: line {}: {}",
                        skipped.len(),
                        skipped[0].line,
                        skipped[0].reason
                    ),
                );
            }
        }
        Event::Step(s) => {
            bar.set_position(s.step as u64);
            let msg = format!(
                "loss {:.4} | lr {:.2e} | {:.0} tok/s",
                s.loss,
                s.lr,
                s.items as f64 / s.seconds.max(1e-9)
            );
            bar.set_message(msg.clone());
            if bar.is_hidden() && (s.step % log_every == 0 || s.step == 1) {
                eprintln!("step {} {msg}", s.step);
            }
        }
        Event::Eval { step, e } => say(
            &bar,
            format!(
                "step {step}: dev loss {:.4} | greedy exact match {:.3}",
                e.loss,
                e.log["dev_exact_match"].as_f64().unwrap_or(f64::NAN)
            ),
        ),
        Event::Checkpoint(_) => {}
    };
    let ended = finetune_chat(&run, &opts, &mut on_event)?;
    bar.finish_and_clear();
    if !tessera::dist::is_root() {
        return Ok(()); // rank 0 of a data-parallel job reports
    }
    if let Err(e) = crate::plot::loss_png(&a.out) {
        eprintln!("warning: loss.png not written: {e}");
    }
    eprintln!(
        "{:?}: {} written to {} (best by dev loss in {}/best)",
        ended,
        if full { "model" } else { "adapter" },
        a.out.display(),
        a.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalChatArgs {
    /// The chat model (a known name, a `.gguf` file or a Hugging Face directory).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// A LoRA adapter directory (PEFT layout) merged into the model first.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// JSONL conversations (as `tessera finetune chat` reads); the last assistant turn of each
    /// is the reference, the turns before it the prompt.
    #[arg(long)]
    data: PathBuf,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// Comma-separated label words: also score the first label word in each answer.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Print each answer beside its reference.
    #[arg(long)]
    verbose: bool,
}

/// `tessera eval chat`: greedy answers scored against the reference turns.
pub fn eval_chat(a: EvalChatArgs) -> Result<()> {
    let path = tessera::hub::resolve(&a.model)?;
    let (model, tok) = tessera::generate::load_with_adapter(&path, &a.model, a.adapter.as_deref())?;
    let mut convs = Vec::new();
    for (line, msgs) in tessera::tasks::sft::read_chat_jsonl(&a.data)? {
        match msgs {
            Ok(m) => convs.push(m),
            Err(e) => bail!("{}:{line}: {e}", a.data.display()),
        }
    }
    let bar = ProgressBar::new(convs.len() as u64);
    let verbose = a.verbose;
    let r = tessera::tasks::sft::eval_generation(
        &model,
        &tok,
        &convs,
        a.max_tokens,
        &a.labels,
        &mut |i, got, want| {
            bar.inc(1);
            if verbose {
                say(&bar, format!("{}: {got:?} (reference {want:?})", i + 1));
            }
        },
    )?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
