//! The training loop: batches, forward, backward, clipping, AdamW, evaluation, checkpoints, logs.

use super::checkpoint::{self, TrainerState, STATE_VERSION};
use super::data::{Batcher, TokenData};
use super::eval::{evaluate_tokens, LmEval};
use super::optim::{global_norm, AdamW};
use super::schedule::lr_at;
use super::TrainConfig;
use crate::models::{ModelConfig, ParamStore, Transformer};
use crate::nn::Dropout;
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one optimizer step did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepStats {
    /// Steps completed after this one.
    pub step: usize,
    /// Mean training loss over the step's micro-batches (nats/token).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the step.
    pub tokens: usize,
    /// Seconds the step took.
    pub seconds: f64,
}

/// A training run in memory.
pub struct Trainer {
    pub model_cfg: ModelConfig,
    pub cfg: TrainConfig,
    pub params: ParamStore,
    pub model: Transformer,
    pub opt: AdamW,
    pub tokenizer: Tokenizer,
    pub data: TokenData,
    pub batcher: Batcher,
    /// Dropout generator.
    pub rng: Rng,
    /// Optimizer steps completed.
    pub step: usize,
    pub tokens_seen: u64,
    /// Training seconds before this process (from a resumed checkpoint).
    pub elapsed_before: f64,
    device: Device,
}

impl Trainer {
    /// A fresh run: parameters initialized from the seed.
    pub fn new(
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        tokenizer: Tokenizer,
        data: TokenData,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        model_cfg.validate()?;
        if tokenizer.vocab_size() > model_cfg.vocab_size {
            return Err(Error::Config(format!(
                "the tokenizer has {} tokens but the model's vocab_size is {}",
                tokenizer.vocab_size(),
                model_cfg.vocab_size
            )));
        }
        if cfg.block_size > model_cfg.max_position_embeddings {
            return Err(Error::Config(format!(
                "block_size {} exceeds the model's max_position_embeddings {}",
                cfg.block_size, model_cfg.max_position_embeddings
            )));
        }
        let mut rng = Rng::new(cfg.seed);
        let params = ParamStore::init(&model_cfg, &mut rng, DType::F32, device)?;
        let opt = AdamW::new(&params, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)?;
        let model = Transformer::from_params(&model_cfg, &params)?;
        let batcher = Batcher::new(data.train.len(), cfg.block_size, cfg.seed)?;
        if super::data::num_blocks(data.val.len(), 1) == 0 {
            return Err(Error::Input(
                "the validation split is empty; use more text".into(),
            ));
        }
        Ok(Trainer {
            model_cfg,
            cfg,
            params,
            model,
            opt,
            tokenizer,
            data,
            batcher,
            rng: rng.fork(),
            step: 0,
            tokens_seen: 0,
            elapsed_before: 0.0,
            device: device.clone(),
        })
    }

    /// Continue from a checkpoint; `text` must be the run's training text. `max_steps` may extend the schedule.
    pub fn resume(
        ckpt: &Path,
        text: &str,
        max_steps: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let l = checkpoint::load(ckpt, device)?;
        let mut cfg = l.state.train_config.clone();
        if let Some(n) = max_steps {
            cfg.max_steps = n;
        }
        let eos = l.tokenizer.eos_id().unwrap_or(0);
        let data = TokenData::from_text(&l.tokenizer, text, cfg.val_fraction, eos)?;
        let mut batcher = Batcher::new(data.train.len(), cfg.block_size, cfg.seed)?;
        batcher.restore(l.state.batcher.clone())?;
        let mut opt = AdamW::new(&l.params, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)?;
        opt.m = l.m;
        opt.v = l.v;
        opt.step = l.state.adam_step;
        let model = Transformer::from_params(&l.cfg, &l.params)?;
        Ok(Trainer {
            model_cfg: l.cfg,
            cfg,
            params: l.params,
            model,
            opt,
            tokenizer: l.tokenizer,
            data,
            batcher,
            rng: l.state.rng,
            step: l.state.step,
            tokens_seen: l.state.tokens_seen,
            elapsed_before: l.state.elapsed_s,
            device: device.clone(),
        })
    }

    /// One optimizer step (with gradient accumulation over `grad_accum` micro-batches).
    pub fn train_step(&mut self) -> Result<StepStats> {
        let start = Instant::now();
        let lr = lr_at(
            self.step,
            self.cfg.lr,
            self.cfg.min_lr,
            self.cfg.warmup_steps,
            self.cfg.max_steps,
        );
        let accum = self.cfg.grad_accum;
        let mut grads: Vec<Option<Tensor>> = vec![None; self.params.vars.len()];
        let mut loss_sum = 0.0;
        for _ in 0..accum {
            let (x, y) =
                self.batcher
                    .next_batch(&self.data.train, self.cfg.batch_size, &self.device)?;
            let p = self.model_cfg.dropout;
            let loss = if p > 0.0 {
                let mut d = Dropout {
                    p,
                    rng: &mut self.rng,
                };
                self.model.loss(&x, &y, Some(&mut d))?
            } else {
                self.model.loss(&x, &y, None)?
            };
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let scaled = if accum > 1 {
                (loss / accum as f64)?
            } else {
                loss
            };
            let store = scaled.backward()?;
            for (i, var) in self.params.vars.iter().enumerate() {
                let g = store.get(var.as_tensor()).ok_or_else(|| {
                    Error::Input(format!(
                        "parameter '{}' received no gradient",
                        self.params.specs[i].name
                    ))
                })?;
                grads[i] = Some(match grads[i].take() {
                    None => g.clone(),
                    Some(acc) => (acc + g)?,
                });
            }
        }
        let mut grads: Vec<Tensor> = grads
            .into_iter()
            .map(|g| g.expect("filled above"))
            .collect();
        let norm = global_norm(&grads)?;
        if !norm.is_finite() {
            return Err(Error::Input(format!(
                "gradient norm is {norm} at step {}: training diverged (lower the learning rate)",
                self.step + 1
            )));
        }
        if self.cfg.grad_clip > 0.0 && norm > self.cfg.grad_clip {
            let s = self.cfg.grad_clip / (norm + 1e-6);
            grads = grads
                .into_iter()
                .map(|g| g * s)
                .collect::<candle_core::Result<_>>()?;
        }
        self.opt.step(&self.params, &grads, lr)?;
        self.step += 1;
        let tokens = self.cfg.tokens_per_step();
        self.tokens_seen += tokens as u64;
        Ok(StepStats {
            step: self.step,
            loss: loss_sum / accum as f64,
            lr,
            grad_norm: norm,
            tokens,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Validation loss, perplexity and bits per character (all validation text unless `eval_batches` limits it).
    pub fn evaluate(&self) -> Result<LmEval> {
        let max_windows = self.cfg.eval_batches * self.cfg.batch_size;
        evaluate_tokens(
            &self.model,
            &self.data.val,
            self.data.val_chars,
            self.cfg.block_size,
            self.cfg.batch_size,
            max_windows,
        )
    }

    /// The state saved beside the weights.
    pub fn state(&self, elapsed_now: f64) -> TrainerState {
        TrainerState {
            version: STATE_VERSION,
            step: self.step,
            adam_step: self.opt.step,
            rng: self.rng.clone(),
            batcher: self.batcher.state.clone(),
            train_config: self.cfg.clone(),
            tokens_seen: self.tokens_seen,
            elapsed_s: self.elapsed_before + elapsed_now,
        }
    }

    /// Write a checkpoint directory.
    pub fn save(&self, dir: &Path, elapsed_now: f64) -> Result<()> {
        checkpoint::save(
            dir,
            &self.model_cfg,
            &self.params,
            &self.tokenizer,
            &self.opt.m,
            &self.opt.v,
            &self.state(elapsed_now),
        )
    }
}

/// Receives progress from [`run`].
pub trait Observer {
    fn on_step(&mut self, _trainer: &Trainer, _s: &StepStats) {}
    fn on_eval(&mut self, _step: usize, _e: &LmEval) {}
    fn on_checkpoint(&mut self, _step: usize, _dir: &Path) {}
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// The schedule's `max_steps` were done.
    Finished,
    /// `--max-time` ran out.
    TimeLimit,
    /// Interrupted (Ctrl-C); a checkpoint was written.
    Interrupted,
}

/// Where a run writes and when it stops.
pub struct RunOptions<'a> {
    /// Run directory: `checkpoint/`, `metrics.jsonl`, `loss.png`.
    pub out_dir: PathBuf,
    /// Stop (with a checkpoint) after this much wall time.
    pub max_time: Option<Duration>,
    /// Set from a signal handler to stop after the current step.
    pub stop: &'a AtomicBool,
    /// Draw `loss.png`.
    pub plot: bool,
}

/// Train until the schedule ends, time runs out or `stop` is set; evaluate, log and checkpoint on the way.
pub fn run(
    t: &mut Trainer,
    opts: &RunOptions<'_>,
    obs: &mut dyn Observer,
) -> Result<(Ended, LmEval)> {
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let ckpt_dir = out.join("checkpoint");
    let metrics_path = out.join("metrics.jsonl");
    // Keep only log lines up to the step we start from (a killed run may have logged further).
    let (mut train_pts, mut val_pts) = trim_metrics(&metrics_path, t.step)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let mut write_log = |v: serde_json::Value| -> Result<()> {
        writeln!(log, "{v}").map_err(|e| Error::io(&metrics_path, e))
    };
    let start = Instant::now();
    let mut ended = Ended::Finished;
    let mut last_eval: Option<(usize, LmEval)> = None;
    while t.step < t.cfg.max_steps {
        if opts.stop.load(Ordering::SeqCst) {
            ended = Ended::Interrupted;
            break;
        }
        if opts.max_time.is_some_and(|m| start.elapsed() >= m) {
            ended = Ended::TimeLimit;
            break;
        }
        let s = t.train_step()?;
        write_log(
            serde_json::json!({"step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm,
            "tokens_per_s": s.tokens as f64 / s.seconds, "elapsed_s": t.elapsed_before + start.elapsed().as_secs_f64()}),
        )?;
        train_pts.push((s.step as f64, s.loss));
        obs.on_step(t, &s);
        let at_end = t.step == t.cfg.max_steps;
        if (t.cfg.eval_every > 0 && t.step.is_multiple_of(t.cfg.eval_every)) || at_end {
            let e = t.evaluate()?;
            write_eval(&mut write_log, t.step, &e)?;
            val_pts.push((t.step as f64, e.loss));
            obs.on_eval(t.step, &e);
            last_eval = Some((t.step, e));
            if opts.plot {
                super::plot::loss_curve(&out.join("loss.png"), &train_pts, &val_pts)?;
            }
        }
        if (t.cfg.checkpoint_every > 0 && t.step.is_multiple_of(t.cfg.checkpoint_every)) || at_end {
            t.save(&ckpt_dir, start.elapsed().as_secs_f64())?;
            obs.on_checkpoint(t.step, &ckpt_dir);
        }
    }
    let e = match last_eval {
        Some((s, e)) if s == t.step => e,
        _ => {
            let e = t.evaluate()?;
            write_eval(&mut write_log, t.step, &e)?;
            val_pts.push((t.step as f64, e.loss));
            obs.on_eval(t.step, &e);
            if opts.plot {
                super::plot::loss_curve(&out.join("loss.png"), &train_pts, &val_pts)?;
            }
            t.save(&ckpt_dir, start.elapsed().as_secs_f64())?;
            obs.on_checkpoint(t.step, &ckpt_dir);
            e
        }
    };
    Ok((ended, e))
}

fn write_eval(
    write_log: &mut dyn FnMut(serde_json::Value) -> Result<()>,
    step: usize,
    e: &LmEval,
) -> Result<()> {
    write_log(
        serde_json::json!({"step": step, "val_loss": e.loss, "val_ppl": e.perplexity,
        "val_nats_per_char": e.nats_per_char, "val_bits_per_char": e.bits_per_char}),
    )
}

type Points = Vec<(f64, f64)>;

/// Drop log lines past `step`; return the (step, loss) points kept for the plot.
fn trim_metrics(path: &Path, step: usize) -> Result<(Points, Points)> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    if !path.exists() {
        return Ok((train, val));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let s = v["step"].as_u64().unwrap_or(u64::MAX) as usize;
        if s > step {
            continue;
        }
        if let Some(l) = v["loss"].as_f64() {
            train.push((s as f64, l));
        }
        if let Some(l) = v["val_loss"].as_f64() {
            val.push((s as f64, l));
        }
        kept.push_str(line);
        kept.push('\n');
    }
    crate::util::fs::write_atomic(path, kept.as_bytes())?;
    Ok((train, val))
}
