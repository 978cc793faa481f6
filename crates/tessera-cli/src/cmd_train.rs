//! `tessera train`

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera::models::TransformerConfig;
use tessera::tokenizer::Tokenizer;
use tessera::train::data::{split_text, TokenData};
use tessera::train::trainer::{run as run_training, Ended, Observer, RunOptions, Trainer};
use tessera::train::StepStats;
use tessera::train::{LmEval, TrainConfig};

/// Configs built into the program, usable by name.
pub const BUILTIN_CONFIGS: [(&str, &str); 3] = [
    ("small", include_str!("../../../configs/small.json")),
    ("tiny", include_str!("../../../configs/tiny.json")),
    (
        "tiny-llama",
        include_str!("../../../configs/tiny-llama.json"),
    ),
];

/// What `tessera train` trains.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// A decoder language model on text.
    Lm,
    /// An encoder-decoder on sentence pairs (a TSV with a header naming the columns).
    Translation,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// What to train.
    #[arg(long, value_enum, default_value = "lm")]
    task: Task,
    /// Training data: UTF-8 text (lm; the last part is held out for validation), or a TSV of
    /// sentence pairs (translation; dev split by the `ref` column's book).
    #[arg(long)]
    data: PathBuf,
    /// Translation: the source column of the TSV (e.g. en).
    #[arg(long)]
    src: Option<String>,
    /// Translation: the target column of the TSV (e.g. es).
    #[arg(long)]
    tgt: Option<String>,
    /// Model + training config: a JSON file with Hugging Face names, or a built-in name (lm:
    /// small, tiny, tiny-llama; translation: seq2seq-small, seq2seq-tiny).
    #[arg(long)]
    config: Option<String>,
    /// Run directory: checkpoint/, metrics.jsonl, loss.png.
    #[arg(long)]
    out: PathBuf,
    /// Use this tokenizer.json instead of training one on the data.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start over when --out already holds a run (its checkpoint and logs are replaced).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Optimizer steps of the whole schedule (overrides the config).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Stop after this many minutes (a checkpoint is written).
    #[arg(long)]
    max_time: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    block_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup_steps: Option<usize>,
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Do not draw loss.png.
    #[arg(long)]
    no_plot: bool,
}

/// Read a config by path or built-in name: (model config, training config).
pub fn load_config(spec: &str) -> Result<(TransformerConfig, TrainConfig)> {
    let text = if Path::new(spec).exists() {
        tessera::error::read_text(spec)?
    } else if let Some((_, t)) = BUILTIN_CONFIGS.iter().find(|(n, _)| *n == spec) {
        t.to_string()
    } else {
        bail!("config '{spec}' is neither a file nor a built-in config (small, tiny, tiny-llama)")
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("config {spec}"))?;
    let m = TransformerConfig::from_hf_json(&v).with_context(|| format!("config {spec}"))?;
    let t = TrainConfig::from_config_json(&v).with_context(|| format!("config {spec}"))?;
    Ok((m, t))
}

struct Bar {
    bar: ProgressBar,
    log_every: usize,
    max_steps: usize,
    /// Redraw `loss.png` here after each evaluation.
    plot: Option<PathBuf>,
}

impl Observer for Bar {
    fn on_step(&mut self, s: &StepStats) {
        self.bar.set_position(s.step as u64);
        let msg = format!(
            "loss {:.4} | lr {:.2e} | {:.0} tok/s",
            s.loss,
            s.lr,
            s.items as f64 / s.seconds
        );
        self.bar.set_message(msg.clone());
        if self.bar.is_hidden() && (s.step.is_multiple_of(self.log_every) || s.step == 1) {
            eprintln!("step {}/{} {msg}", s.step, self.max_steps);
        }
    }
    fn on_eval(&mut self, step: usize, e: &LmEval) {
        self.bar.println(format!(
            "step {step}: val loss {:.4} | ppl {:.2} | {:.4} nats/char | {:.4} bits/char",
            e.loss, e.perplexity, e.nats_per_char, e.bits_per_char
        ));
        if let Some(dir) = &self.plot {
            if let Err(e) = crate::plot::loss_png(dir) {
                self.bar.println(format!("loss.png: {e:#}"));
            }
        }
    }
    fn on_checkpoint(&mut self, step: usize, dir: &Path) {
        self.bar
            .println(format!("step {step}: checkpoint {}", dir.display()));
    }
}

/// Make `out` ready for a fresh run: with `overwrite`, remove what an earlier run left there
/// (`dirs`, `metrics.jsonl`, `loss.png`); without, refuse when it holds a run.
pub fn prepare_out(out: &Path, overwrite: bool, dirs: &[&str]) -> Result<()> {
    let files = ["metrics.jsonl", "loss.png"];
    if overwrite {
        for f in dirs.iter().chain(&files) {
            let p = out.join(f);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            } else if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    if dirs.iter().any(|d| out.join(d).exists()) {
        bail!(
            "{} already holds a run (use --resume to continue it, --overwrite to start over, or another --out)",
            out.display()
        );
    }
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<()> {
    if a.task == Task::Translation {
        return crate::cmd_seq2seq::train(crate::cmd_seq2seq::TrainTranslation {
            data: &a.data,
            src: a.src.as_deref(),
            tgt: a.tgt.as_deref(),
            config: a.config.as_deref().unwrap_or("seq2seq-small"),
            out: &a.out,
            tokenizer: a.tokenizer.as_deref(),
            resume: a.resume,
            overwrite: a.overwrite,
            max_steps: a.max_steps,
            max_time: a.max_time,
            lr: a.lr,
            seed: a.seed,
            eval_every: a.eval_every,
            no_plot: a.no_plot,
        });
    }
    if a.src.is_some() || a.tgt.is_some() {
        bail!("--src and --tgt belong to --task translation");
    }
    let text = tessera::error::read_text(&a.data)?;
    if text.trim().is_empty() {
        bail!("{}: the training text is empty", a.data.display());
    }
    let device = candle_core_device();
    let ckpt = a.out.join("checkpoint");
    let mut trainer = if a.resume {
        if !ckpt.exists() {
            bail!(
                "--resume: {} has no checkpoint to resume from",
                a.out.display()
            );
        }
        let t = Trainer::resume(&ckpt, &text, a.max_steps, &device)?;
        eprintln!(
            "resuming {} at step {}/{}",
            ckpt.display(),
            t.step,
            t.cfg.max_steps
        );
        t
    } else {
        if tessera::dist::is_root() {
            prepare_out(&a.out, a.overwrite, &["checkpoint"])?;
        }
        let (mut mcfg, mut tcfg) = load_config(a.config.as_deref().unwrap_or("small"))?;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = a.$f { tcfg.$f = v; } )* };
        }
        set!(
            max_steps,
            batch_size,
            block_size,
            grad_accum,
            lr,
            warmup_steps,
            eval_every,
            seed
        );
        tcfg.min_lr = tcfg.min_lr.min(tcfg.lr);
        tcfg.validate()?;
        let (train_text, _) = split_text(&text, tcfg.val_fraction);
        let tok = match &a.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => {
                eprintln!(
                    "training a {}-token byte-level BPE on {}",
                    tcfg.vocab_size,
                    a.data.display()
                );
                // Every rank of a data-parallel run uses rank 0's.
                tessera::dist::share_tokenizer(
                    tessera::dist::world(),
                    Tokenizer::train_bpe(&[train_text], tcfg.vocab_size)?,
                )?
            }
        };
        mcfg.vocab_size = tok.vocab_size();
        let eos = tok.eos_id().unwrap_or(0);
        mcfg.eos_token_id = Some(eos);
        mcfg.bos_token_id = Some(eos);
        let data = TokenData::from_text(&tok, &text, tcfg.val_fraction, eos)?;
        eprintln!(
            "{} parameters | {} training tokens, {} validation tokens | {} tokens per step",
            mcfg.num_params(),
            data.train.len(),
            data.val.len(),
            tcfg.tokens_per_step()
        );
        Trainer::new(mcfg, tcfg, tok, data, &device)?
    };
    let stop = crate::interrupt_flag();
    let bar = crate::progress::steps_bar(trainer.cfg.max_steps as u64);
    bar.set_position(trainer.step as u64);
    bar.reset_eta();
    let mut obs = Bar {
        bar,
        log_every: (trainer.cfg.max_steps / 20).max(1),
        max_steps: trainer.cfg.max_steps,
        plot: (!a.no_plot).then(|| a.out.clone()),
    };
    let opts = RunOptions {
        out_dir: a.out.clone(),
        max_time: a.max_time.map(|m| Duration::from_secs_f64(m * 60.0)),
        stop: &stop,
        comm: tessera::dist::world(),
    };
    let (ended, e) = run_training(&mut trainer, &opts, &mut obs)?;
    obs.bar.finish_and_clear();
    let Some(e) = e else {
        return Ok(()); // another rank than 0: rank 0 reports
    };
    let how = match ended {
        Ended::Finished | Ended::EarlyStop => "finished",
        Ended::TimeLimit => "stopped at the time limit",
        Ended::Interrupted => "interrupted",
    };
    eprintln!(
        "{how} at step {}/{}: val loss {:.4}, ppl {:.2}, {:.4} bits/char; checkpoint in {}",
        trainer.step,
        trainer.cfg.max_steps,
        e.loss,
        e.perplexity,
        e.bits_per_char,
        ckpt.display()
    );
    if ended != Ended::Finished {
        eprintln!(
            "continue with: tessera train --data {} --out {} --resume",
            a.data.display(),
            a.out.display()
        );
    }
    Ok(())
}

/// The device commands run on (CPU; CUDA comes with the engine's `cuda` feature).
pub fn candle_core_device() -> tessera::Device {
    tessera::Device::Cpu
}
