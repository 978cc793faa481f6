//! Language-model training from scratch (`tessera train`): the run in memory (model, data,
//! optimizer, position), its checkpoints, and its objective for the one loop
//! ([`super::run`]).

use super::checkpoint::{self, TrainerState, STATE_VERSION};
use super::data::{Batcher, TokenData};
use super::eval::{evaluate_tokens, LmEval};
use super::optim::AdamW;
use super::run::{optimizer_step, EvalAt, Evaluation, Micro, Objective, Plan, RunState, Shard};
pub use super::run::{Ended, StepStats};
use super::schedule::Schedule;
use super::TrainConfig;
use crate::models::{BlockDropout, ParamStore, Transformer, TransformerConfig};
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// A training run in memory.
pub struct Trainer {
    pub model_cfg: TransformerConfig,
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
        model_cfg: TransformerConfig,
        cfg: TrainConfig,
        tokenizer: Tokenizer,
        data: TokenData,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        model_cfg.validate()?;
        model_cfg.require_decoder("language-model training")?;
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
        let lr = self.schedule().lr(self.step);
        let Trainer {
            model,
            params,
            opt,
            cfg,
            model_cfg,
            data,
            batcher,
            rng,
            device,
            ..
        } = self;
        let (loss, grad_norm, tokens) =
            optimizer_step(params, opt, cfg.grad_accum, cfg.grad_clip, lr, || {
                lm_micro(
                    model,
                    model_cfg,
                    cfg,
                    data,
                    batcher,
                    device,
                    rng,
                    Shard::WHOLE,
                )
            })?
            .ok_or_else(|| Error::Input("no training data".into()))?;
        self.step += 1;
        self.tokens_seen += tokens as u64;
        Ok(StepStats {
            step: self.step,
            epoch: 1,
            loss,
            lr,
            grad_norm,
            items: tokens,
            seconds: start.elapsed().as_secs_f64(),
            comm_seconds: 0.0,
        })
    }

    /// Validation loss, perplexity and bits per character (all validation text unless `eval_batches` limits it).
    pub fn evaluate(&self) -> Result<LmEval> {
        evaluate_lm(&self.model, &self.cfg, &self.data)
    }

    /// The learning-rate schedule of the run.
    pub fn schedule(&self) -> Schedule {
        Schedule::Cosine {
            lr: self.cfg.lr,
            min_lr: self.cfg.min_lr,
            warmup: self.cfg.warmup_steps,
            total: self.cfg.max_steps,
        }
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
    fn on_step(&mut self, _s: &StepStats) {}
    fn on_eval(&mut self, _step: usize, _e: &LmEval) {}
    fn on_checkpoint(&mut self, _step: usize, _dir: &Path) {}
}

/// Where a run writes and when it stops.
pub struct RunOptions<'a> {
    /// Run directory: `checkpoint/`, `metrics.jsonl`.
    pub out_dir: PathBuf,
    /// Stop (with a checkpoint) after this much wall time.
    pub max_time: Option<Duration>,
    /// Set from a signal handler to stop after the current step.
    pub stop: &'a AtomicBool,
    /// The job's ranks (data-parallel; [`crate::dist::Single`] for one process).
    pub comm: &'a dyn crate::dist::Communicator,
}

/// Language modelling as an [`Objective`] of the one loop: next-token cross-entropy on batches
/// of the token stream (dropout from the run's generator), validation loss, perplexity and bits
/// per character, and resumable checkpoints.
struct LmObjective<'t> {
    model: &'t Transformer,
    params: &'t ParamStore,
    cfg: &'t TrainConfig,
    model_cfg: &'t TransformerConfig,
    data: &'t TokenData,
    batcher: &'t mut Batcher,
    tokenizer: &'t Tokenizer,
    tokens_seen: &'t mut u64,
    elapsed_before: f64,
    device: &'t Device,
    checkpoint: PathBuf,
    obs: &'t mut dyn Observer,
    last_eval: Option<LmEval>,
    saved_at: Option<usize>,
}

/// `shard`'s rows of the next batch of windows: next-token cross-entropy (every rank draws the
/// whole batch, so the batcher stays the same on all ranks).
#[allow(clippy::too_many_arguments)]
fn lm_micro(
    model: &Transformer,
    model_cfg: &TransformerConfig,
    cfg: &TrainConfig,
    data: &TokenData,
    batcher: &mut Batcher,
    device: &Device,
    rng: &mut Rng,
    shard: Shard,
) -> Result<Option<Micro>> {
    let (x, y) = batcher.next_batch(&data.train, cfg.batch_size, device)?;
    let rows = shard.range(cfg.batch_size);
    let mut drop_rng = shard.dropout_rng(rng);
    if rows.is_empty() {
        return Micro::empty().map(Some);
    }
    let (x, y) = (
        x.narrow(0, rows.start, rows.len())?,
        y.narrow(0, rows.start, rows.len())?,
    );
    let (hidden, attention) = (model_cfg.dropout, model_cfg.attention_dropout);
    let loss = if hidden > 0.0 || attention > 0.0 {
        let mut d = BlockDropout {
            hidden,
            attention,
            rng: &mut drop_rng,
        };
        model.loss(&x, &y, Some(&mut d))?
    } else {
        model.loss(&x, &y, None)?
    };
    let tokens = rows.len() * cfg.block_size;
    Ok(Some(Micro {
        loss,
        items: tokens,
        terms: tokens,
    }))
}

impl Objective for LmObjective<'_> {
    fn params(&self) -> &ParamStore {
        self.params
    }

    fn items_name(&self) -> &'static str {
        "tokens"
    }

    fn next_micro(&mut self, rng: &mut Rng, shard: Shard) -> Result<Option<Micro>> {
        lm_micro(
            self.model,
            self.model_cfg,
            self.cfg,
            self.data,
            self.batcher,
            self.device,
            rng,
            shard,
        )
    }

    fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        let e = evaluate_lm(self.model, self.cfg, self.data)?;
        let log = serde_json::json!({"val_loss": e.loss, "val_ppl": e.perplexity,
            "val_nats_per_char": e.nats_per_char, "val_bits_per_char": e.bits_per_char});
        let ev = Evaluation {
            loss: e.loss,
            score: None,
            log,
        };
        self.last_eval = Some(e);
        Ok(Some(ev))
    }

    fn on_eval(&mut self, step: usize, _e: &mut Evaluation, _best: bool) -> Result<()> {
        if let Some(e) = &self.last_eval {
            self.obs.on_eval(step, e);
        }
        Ok(())
    }

    fn on_step(&mut self, s: &StepStats, opt: &AdamW, rng: &Rng, elapsed: f64) -> Result<()> {
        *self.tokens_seen += s.items as u64;
        self.obs.on_step(s);
        let every = self.cfg.checkpoint_every;
        if (every > 0 && s.step.is_multiple_of(every)) || s.step == self.cfg.max_steps {
            let state = TrainerState {
                version: STATE_VERSION,
                step: s.step,
                adam_step: opt.step,
                rng: rng.clone(),
                batcher: self.batcher.state.clone(),
                train_config: self.cfg.clone(),
                tokens_seen: *self.tokens_seen,
                elapsed_s: self.elapsed_before + elapsed,
            };
            checkpoint::save(
                &self.checkpoint,
                self.model_cfg,
                self.params,
                self.tokenizer,
                &opt.m,
                &opt.v,
                &state,
            )?;
            self.obs.on_checkpoint(s.step, &self.checkpoint);
            self.saved_at = Some(s.step);
        }
        Ok(())
    }
}

/// The validation loss of `model` on `data` (at most `eval_batches` batches of windows).
fn evaluate_lm(model: &Transformer, cfg: &TrainConfig, data: &TokenData) -> Result<LmEval> {
    let max_windows = cfg.eval_batches * cfg.batch_size;
    evaluate_tokens(
        model,
        &data.val,
        data.val_chars,
        cfg.block_size,
        cfg.batch_size,
        max_windows,
    )
}

/// Train until the schedule ends, time runs out or `stop` is set, with the one loop
/// ([`super::run::run`]): evaluate every `eval_every` steps and at the end, log to
/// `metrics.jsonl`, checkpoint every `checkpoint_every` steps and at the end (also when stopped
/// early). Returns how it ended and the last evaluation (`None` on ranks other than 0, which
/// write and evaluate nothing).
pub fn run(
    t: &mut Trainer,
    opts: &RunOptions<'_>,
    obs: &mut dyn Observer,
) -> Result<(Ended, Option<LmEval>)> {
    let out = &opts.out_dir;
    let root = opts.comm.rank() == 0;
    let metrics_path = out.join("metrics.jsonl");
    if root {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        // Keep only log lines up to the step we start from (a killed run may have logged further).
        trim_metrics(&metrics_path, t.step)?;
    }
    let plan = Plan {
        schedule: t.schedule(),
        max_steps: t.cfg.max_steps,
        epochs: usize::MAX,
        grad_accum: t.cfg.grad_accum,
        grad_clip: t.cfg.grad_clip,
        eval: EvalAt::Steps(t.cfg.eval_every),
        patience: 0,
        max_time: opts.max_time,
        stop: Some(opts.stop),
        metrics: Some(metrics_path),
        comm: opts.comm,
    };
    let mut state = RunState::at_step(t.step);
    let checkpoint = out.join("checkpoint");
    let Trainer {
        model,
        params,
        opt,
        cfg,
        model_cfg,
        data,
        batcher,
        tokenizer,
        rng,
        tokens_seen,
        elapsed_before,
        device,
        ..
    } = t;
    let mut o = LmObjective {
        model,
        params,
        cfg,
        model_cfg,
        data,
        batcher,
        tokenizer,
        tokens_seen,
        elapsed_before: *elapsed_before,
        device,
        checkpoint: checkpoint.clone(),
        obs,
        last_eval: None,
        saved_at: None,
    };
    let ended = super::run::run(&mut o, opt, rng, &mut state, &plan, &mut ())?;
    let (last, saved_at) = (o.last_eval.take(), o.saved_at);
    t.step = state.step;
    if !root {
        return Ok((ended, None));
    }
    if saved_at != Some(t.step) {
        // Stopped between checkpoints: keep what was trained.
        t.save(&checkpoint, 0.0)?;
        obs.on_checkpoint(t.step, &checkpoint);
    }
    let e = match last {
        Some(e) => e,
        None => t.evaluate()?,
    };
    Ok((ended, Some(e)))
}

/// Drop log lines past `step` (a killed run may have logged further than its checkpoint).
pub fn trim_metrics(path: &Path, step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["step"].as_u64().unwrap_or(u64::MAX) as usize > step {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    crate::util::fs::write_atomic(path, kept.as_bytes())
}
