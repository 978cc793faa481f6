//! The one training loop. Every objective tessera trains — causal language modelling
//! (`tessera train`), sequence and token classification (`finetune`), masked-LM pretraining and
//! the throughput benchmark — is an [`Objective`] run by [`run`]: micro-batches, gradient
//! accumulation, a check that every parameter got a gradient, global-norm clipping, AdamW at the
//! [`Schedule`]'s rate, evaluation (every N steps or every epoch), early stopping, a time limit,
//! Ctrl-C, and `metrics.jsonl`.

use super::optim::{global_norm, AdamW};
use super::schedule::Schedule;
use crate::models::ParamStore;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The loss of one micro-batch: a scalar (the mean over its items) with gradients into the
/// objective's parameters.
pub struct Micro {
    pub loss: Tensor,
    /// Tokens or examples it covers (for throughput).
    pub items: usize,
}

/// What an evaluation found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    /// Mean loss on the held-out data.
    pub loss: f64,
    /// What "best" means (higher is better): accuracy, F1; `None`: the loss decides (lower).
    pub score: Option<f64>,
    /// Fields for the evaluation's `metrics.jsonl` line (merged with `step`).
    pub log: Value,
}

impl Evaluation {
    /// Higher is better.
    fn merit(&self) -> f64 {
        self.score.unwrap_or(-self.loss)
    }
}

/// What the loop trains.
pub trait Objective {
    /// The trained parameters (the optimizer's order).
    fn params(&self) -> &ParamStore;
    /// Prepare epoch `epoch` (1-based): e.g. shuffle. Draws from `rng` come first in the epoch.
    fn start_epoch(&mut self, _epoch: usize, _rng: &mut Rng) -> Result<()> {
        Ok(())
    }
    /// The next micro-batch's loss, or `None` when the epoch's data is used up (a stream that
    /// never ends, as language modelling's, never returns `None`). `rng` drives dropout.
    fn next_micro(&mut self, rng: &mut Rng) -> Result<Option<Micro>>;
    /// Evaluate on held-out data (`None`: nothing to evaluate).
    fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        Ok(None)
    }
    /// After an evaluation at `step`: `best` when it is the best so far (fine-tuning keeps that
    /// model). Runs before the evaluation's `metrics.jsonl` line is written, so it may complete
    /// `e.log` with what only the loop knows.
    fn on_eval(&mut self, _step: usize, _e: &mut Evaluation, _best: bool) -> Result<()> {
        Ok(())
    }
    /// After each optimizer step, with the optimizer and generator as they now are and the
    /// seconds since the run started (language modelling writes its resumable checkpoints here).
    fn on_step(&mut self, _s: &StepStats, _opt: &AdamW, _rng: &Rng, _elapsed: f64) -> Result<()> {
        Ok(())
    }
    /// What an item of [`Micro::items`] is, for the throughput in `metrics.jsonl`
    /// (`{name}_per_s`).
    fn items_name(&self) -> &'static str {
        "items"
    }
}

/// When the loop evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalAt {
    Never,
    /// After every epoch.
    Epochs,
    /// Every this many optimizer steps, and after the last one.
    Steps(usize),
}

/// How a run trains and when it stops.
pub struct Plan<'a> {
    pub schedule: Schedule,
    /// Stop after this many optimizer steps in all (counting steps made before a resume).
    pub max_steps: usize,
    /// Stop after this many epochs (`usize::MAX`: a stream without epochs).
    pub epochs: usize,
    pub grad_accum: usize,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    pub eval: EvalAt,
    /// Stop after this many evaluations without a better one (0 = never).
    pub patience: usize,
    /// Stop after this much training time (evaluations not counted).
    pub max_time: Option<Duration>,
    /// Set (e.g. by Ctrl-C) to stop after the current step.
    pub stop: Option<&'a AtomicBool>,
    /// `metrics.jsonl`, appended to: one line per step and per evaluation.
    pub metrics: Option<PathBuf>,
}

/// What one optimizer step did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepStats {
    /// Steps completed after this one.
    pub step: usize,
    /// The epoch it belongs to (1-based).
    pub epoch: usize,
    /// Mean training loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens or examples in the step.
    pub items: usize,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Where a run stands (kept across epochs, saved for resume by objectives that resume).
#[derive(Clone, Debug, Default)]
pub struct RunState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// The best evaluation's merit so far, and evaluations since it.
    best: Option<f64>,
    since_best: usize,
}

impl RunState {
    /// A run that has made `step` steps already (a resumed one).
    pub fn at_step(step: usize) -> Self {
        RunState {
            step,
            ..Default::default()
        }
    }

    /// A resumed run: steps and epochs completed, the best merit so far and evaluations since.
    pub fn resumed(step: usize, epoch: usize, best: Option<f64>, since_best: usize) -> Self {
        RunState {
            step,
            epoch,
            best,
            since_best,
        }
    }
}

/// Where a checkpoint taken now resumes: (epochs completed, batches of the current epoch done).
/// Mid-epoch, the epoch restarts at batch `next` (its order depends on the seed and the epoch
/// alone); after its last batch, the next epoch starts.
pub fn resume_point(epoch: usize, next: usize, batches: usize) -> (usize, usize) {
    if next >= batches {
        (epoch, 0)
    } else {
        (epoch.saturating_sub(1), next)
    }
}

/// Progress for display; the default does nothing.
pub trait Observer {
    fn on_step(&mut self, _s: &StepStats) {}
    fn on_eval(&mut self, _step: usize, _e: &Evaluation, _best: bool) {}
    /// After each epoch: its mean training loss and items per second.
    fn on_epoch(&mut self, _epoch: usize, _loss: f64, _items_per_s: f64) {}
}

impl Observer for () {}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// All steps or epochs were done.
    Finished,
    /// The time limit ran out.
    TimeLimit,
    /// Stopped on request (Ctrl-C).
    Interrupted,
    /// `patience` evaluations in a row brought no better one.
    EarlyStop,
}

/// One optimizer step: the losses of `accum` micro-batches (each scaled by 1/accum), their
/// gradients summed, every parameter required to have one, the global norm checked finite and
/// clipped to `clip` (0 = off), then AdamW at `lr`. Returns (mean loss, norm, items), or `None`
/// when the data ran out before the first micro-batch.
pub fn optimizer_step(
    params: &ParamStore,
    opt: &mut AdamW,
    accum: usize,
    clip: f64,
    lr: f64,
    next: impl FnMut() -> Result<Option<Micro>>,
) -> Result<Option<(f64, f64, usize)>> {
    step_vars(
        &params.vars,
        &|i| params.specs[i].name.clone(),
        opt,
        accum,
        clip,
        lr,
        next,
    )
}

/// [`optimizer_step`] on the variables (`name(i)` names variable `i` in errors).
fn step_vars(
    vars: &[Var],
    name: &dyn Fn(usize) -> String,
    opt: &mut AdamW,
    accum: usize,
    clip: f64,
    lr: f64,
    mut next: impl FnMut() -> Result<Option<Micro>>,
) -> Result<Option<(f64, f64, usize)>> {
    let accum = accum.max(1);
    let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
    let (mut loss_sum, mut items, mut done) = (0.0, 0usize, 0usize);
    for _ in 0..accum {
        let Some(m) = next()? else { break };
        loss_sum += m.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        items += m.items;
        done += 1;
        let scaled = if accum > 1 {
            (m.loss / accum as f64)?
        } else {
            m.loss
        };
        let store = scaled.backward()?;
        for (i, var) in vars.iter().enumerate() {
            let g = store.get(var.as_tensor()).ok_or_else(|| {
                Error::Input(format!("parameter '{}' received no gradient", name(i)))
            })?;
            grads[i] = Some(match grads[i].take() {
                None => g.clone(),
                Some(acc) => (acc + g)?,
            });
        }
    }
    if done == 0 {
        return Ok(None);
    }
    let mut grads: Vec<Tensor> = grads.into_iter().map(|g| g.expect("filled")).collect();
    let norm = global_norm(&grads)?;
    if !norm.is_finite() {
        return Err(Error::Input(format!(
            "gradient norm is {norm} at step {}: training diverged (lower the learning rate)",
            opt.step + 1
        )));
    }
    if clip > 0.0 && norm > clip {
        let s = clip / (norm + 1e-6);
        grads = grads
            .into_iter()
            .map(|g| g * s)
            .collect::<candle_core::Result<_>>()?;
    }
    opt.update(vars, &grads, lr)?;
    Ok(Some((loss_sum / done as f64, norm, items)))
}

/// Train `obj` as `plan` says, from `state`, until steps, epochs, time or patience run out or
/// `plan.stop` is set. `rng` drives shuffles and dropout (through the objective).
pub fn run(
    obj: &mut dyn Objective,
    opt: &mut AdamW,
    rng: &mut Rng,
    state: &mut RunState,
    plan: &Plan<'_>,
    obs: &mut dyn Observer,
) -> Result<Ended> {
    let mut log = match &plan.metrics {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))?,
        ),
        None => None,
    };
    let mut write = |v: Value| -> Result<()> {
        if let (Some(f), Some(p)) = (log.as_mut(), &plan.metrics) {
            writeln!(f, "{v}").map_err(|e| Error::io(p, e))?;
        }
        Ok(())
    };
    let start = Instant::now();
    // Time spent evaluating: not training time (the time limit and the logged
    // `train_seconds` leave it out).
    let mut eval_time = Duration::ZERO;
    let stopped = || plan.stop.is_some_and(|s| s.load(Ordering::SeqCst));
    let mut last_eval_step = None;
    // The variables are shared handles (the objective builds its model on the same ones).
    let vars: Vec<Var> = obj.params().vars.clone();
    let names: Vec<String> = obj.params().specs.iter().map(|s| s.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    let mut ended = Ended::Finished;
    'epochs: while state.epoch < plan.epochs && state.step < plan.max_steps {
        let epoch = state.epoch + 1;
        obj.start_epoch(epoch, rng)?;
        let t0 = Instant::now();
        let (mut loss_sum, mut steps, mut items) = (0.0, 0usize, 0usize);
        let mut exhausted = false;
        while state.step < plan.max_steps {
            if stopped() {
                ended = Ended::Interrupted;
                break 'epochs;
            }
            if plan
                .max_time
                .is_some_and(|m| start.elapsed().saturating_sub(eval_time) >= m)
            {
                ended = Ended::TimeLimit;
                break 'epochs;
            }
            let ts = Instant::now();
            let lr = plan.schedule.lr(state.step);
            let result = step_vars(
                &vars,
                &name,
                opt,
                plan.grad_accum,
                plan.grad_clip,
                lr,
                || obj.next_micro(rng),
            )?;
            let Some((loss, norm, n)) = result else {
                exhausted = true;
                break;
            };
            state.step += 1;
            let s = StepStats {
                step: state.step,
                epoch,
                loss,
                lr,
                grad_norm: norm,
                items: n,
                seconds: ts.elapsed().as_secs_f64(),
            };
            let mut line = json!({"step": s.step, "loss": loss, "lr": lr, "grad_norm": norm,
                                  "seconds": s.seconds});
            if plan.epochs != usize::MAX {
                line["epoch"] = json!(epoch);
            }
            line[format!("{}_per_s", obj.items_name())] = json!(n as f64 / s.seconds.max(1e-9));
            write(line)?;
            obs.on_step(&s);
            obj.on_step(&s, opt, rng, start.elapsed().as_secs_f64())?;
            (loss_sum, steps, items) = (loss_sum + loss, steps + 1, items + n);
            if let EvalAt::Steps(every) = plan.eval {
                let due =
                    (every > 0 && state.step.is_multiple_of(every)) || state.step == plan.max_steps;
                if due {
                    last_eval_step = Some(state.step);
                    if evaluate(obj, obs, state, plan, &mut write, start, &mut eval_time)? {
                        ended = Ended::EarlyStop;
                        break 'epochs;
                    }
                }
            }
        }
        if steps == 0 {
            break;
        }
        state.epoch = epoch;
        obs.on_epoch(
            epoch,
            loss_sum / steps as f64,
            items as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        );
        if plan.eval == EvalAt::Epochs {
            last_eval_step = Some(state.step);
            if evaluate(obj, obs, state, plan, &mut write, start, &mut eval_time)? {
                ended = Ended::EarlyStop;
                break;
            }
        }
        if !exhausted && plan.epochs == usize::MAX {
            break; // a stream: the step limit ended it
        }
    }
    // A run that evaluates always ends with an evaluation of its final weights (also when it
    // stopped between evaluations: interrupted, out of time).
    if plan.eval != EvalAt::Never && state.step > 0 && last_eval_step != Some(state.step) {
        evaluate(obj, obs, state, plan, &mut write, start, &mut eval_time)?;
    }
    Ok(ended)
}

/// Evaluate, keep track of the best, log (with the training seconds so far, this process's:
/// `start` less `eval_time`, which grows by the evaluation's own time), tell the objective and
/// the observer; true when `patience` evaluations in a row brought nothing better.
fn evaluate(
    obj: &mut dyn Objective,
    obs: &mut dyn Observer,
    state: &mut RunState,
    plan: &Plan<'_>,
    write: &mut dyn FnMut(Value) -> Result<()>,
    start: Instant,
    eval_time: &mut Duration,
) -> Result<bool> {
    let t0 = Instant::now();
    let train_seconds = start.elapsed().saturating_sub(*eval_time).as_secs_f64();
    let evaluated = obj.evaluate();
    *eval_time += t0.elapsed();
    let Some(mut e) = evaluated? else {
        return Ok(false);
    };
    let best = state.best.is_none_or(|b| e.merit() > b);
    if best {
        state.best = Some(e.merit());
        state.since_best = 0;
    } else {
        state.since_best += 1;
    }
    obj.on_eval(state.step, &mut e, best)?;
    let mut line = json!({"step": state.step, "train_seconds": train_seconds,
                          "eval_seconds": t0.elapsed().as_secs_f64()});
    if let (Some(l), Some(f)) = (line.as_object_mut(), e.log.as_object()) {
        l.extend(f.clone());
    }
    write(line)?;
    obs.on_eval(state.step, &e, best);
    Ok(plan.patience > 0 && state.since_best >= plan.patience)
}
