//! The one training loop. Every objective tessera trains — causal language modelling
//! (`tessera train`), sequence and token classification (`finetune`), masked-LM pretraining and
//! the throughput benchmark — is an [`Objective`] run by [`run`]: micro-batches, gradient
//! accumulation, a check that every parameter got a gradient, global-norm clipping, AdamW at the
//! [`Schedule`]'s rate, evaluation (every N steps or every epoch), early stopping, a time limit,
//! Ctrl-C, and `metrics.jsonl`.
//!
//! Data-parallel: with a [`Communicator`] of N ranks ([`Plan::comm`]), every rank walks the same
//! stream of micro-batches and computes its [`Shard`] of each (a contiguous part of the rows);
//! shard losses are weighted by their share of the micro-batch's loss terms, so the gradient
//! summed across ranks (one bucketed all-reduce per optimizer step) is the gradient of the whole
//! micro-batch, as one process computes it. Rank 0 alone evaluates, writes `metrics.jsonl` and
//! reports progress; every rank starts from rank 0's weights.

use super::optim::{global_norm, AdamW};
use super::schedule::Schedule;
use crate::dist::{Communicator, Single};
use crate::models::ParamStore;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The loss of one micro-batch (this rank's shard of it): a scalar, the mean over its loss
/// terms, with gradients into the objective's parameters.
pub struct Micro {
    pub loss: Tensor,
    /// Tokens or examples it covers (for throughput).
    pub items: usize,
    /// The loss terms the mean is over (predicted tokens, labelled tokens, examples). Shards of
    /// one micro-batch on different ranks are weighted by their share of the terms; 0: this
    /// rank's shard is empty (nothing to backpropagate).
    pub terms: usize,
}

impl Micro {
    /// An empty shard (a micro-batch with fewer rows than ranks).
    pub fn empty() -> Result<Micro> {
        Ok(Micro {
            loss: Tensor::new(0f32, &candle_core::Device::Cpu)?,
            items: 0,
            terms: 0,
        })
    }
}

/// Which rows of every micro-batch this process computes: rank `rank` of `size` takes a
/// contiguous, balanced part ([`crate::dist::split`]). One process takes them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub size: usize,
}

impl Shard {
    /// All rows (one process).
    pub const WHOLE: Shard = Shard { rank: 0, size: 1 };

    /// This process's shard in `comm`'s job.
    pub fn of(comm: &dyn Communicator) -> Shard {
        Shard {
            rank: comm.rank(),
            size: comm.size(),
        }
    }

    /// The rows of `n` this shard takes.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        crate::dist::split(n, self.rank, self.size)
    }

    /// This shard's part of `rows`.
    pub fn take<'a, T>(&self, rows: &'a [T]) -> &'a [T] {
        &rows[self.range(rows.len())]
    }

    /// The generator for this shard's dropout masks, for one process too: one draw from the
    /// run's generator (every rank makes it, so the run's generator advances alike whatever the
    /// number of ranks and data drawn from it agrees), derived by rank (each shard its own
    /// masks). Rank 0's equals [`Rng::fork`].
    pub fn dropout_rng(&self, rng: &mut Rng) -> Rng {
        Rng::derived(rng.next_u64(), self.rank as u64)
    }
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
    /// The loss of `shard`'s part of the next micro-batch, or `None` when the epoch's data is
    /// used up (a stream that never ends, as language modelling's, never returns `None`). Every
    /// rank calls it for every micro-batch and must draw the same data from `rng` (dropout draws
    /// from [`Shard::dropout_rng`]); an empty shard is [`Micro::empty`].
    fn next_micro(&mut self, rng: &mut Rng, shard: Shard) -> Result<Option<Micro>>;
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
    /// The ranks of a data-parallel job ([`Single`]: this process alone).
    pub comm: &'a dyn Communicator,
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
    /// Of those, seconds spent summing gradients across ranks (0 for one process).
    pub comm_seconds: f64,
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

/// What [`step_vars`] did: mean loss, gradient norm before clipping, items (all ranks), and
/// seconds spent summing gradients across ranks.
struct StepDone {
    loss: f64,
    norm: f64,
    items: usize,
    comm_seconds: f64,
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
    mut next: impl FnMut() -> Result<Option<Micro>>,
) -> Result<Option<(f64, f64, usize)>> {
    let done = step_vars(
        &params.vars,
        &|i| params.specs[i].name.clone(),
        opt,
        accum,
        clip,
        lr,
        &Single,
        |_| next(),
    )?;
    Ok(done.map(|d| (d.loss, d.norm, d.items)))
}

/// Gradients are summed across ranks in buckets of at most this many values (64 MiB of f32),
/// all in flight at once.
const BUCKET: usize = 16 << 20;

/// [`optimizer_step`] on the variables (`name(i)` names variable `i` in errors), this rank's
/// shards of the micro-batches, gradients summed across `comm`'s ranks.
#[allow(clippy::too_many_arguments)]
fn step_vars(
    vars: &[Var],
    name: &dyn Fn(usize) -> String,
    opt: &mut AdamW,
    accum: usize,
    clip: f64,
    lr: f64,
    comm: &dyn Communicator,
    mut next: impl FnMut(Shard) -> Result<Option<Micro>>,
) -> Result<Option<StepDone>> {
    let accum = accum.max(1);
    let shard = Shard::of(comm);
    let parallel = shard.size > 1;
    let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
    let (mut loss_sum, mut items, mut done) = (0.0, 0usize, 0usize);
    for _ in 0..accum {
        // Sublayers made of fused kernels run as segments (`kernels::segment`): their weights'
        // gradients wait in the sink until the backward pass is over.
        let sink = crate::kernels::segment::Sink::install();
        let Some(m) = next(shard)? else { break };
        items += m.items;
        done += 1;
        // This shard's share of the micro-batch's loss terms (1 for one process).
        let share = if parallel {
            let mut t = [m.terms as f64];
            comm.all_reduce_sum_f64(&mut t)?;
            m.terms as f64 / t[0].max(1.0)
        } else {
            1.0
        };
        if m.terms == 0 {
            continue; // an empty shard: nothing to learn from, zeros to the sum
        }
        loss_sum += share * m.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let scaled = if parallel {
            (m.loss * (share / accum as f64))?
        } else if accum > 1 {
            (m.loss / accum as f64)?
        } else {
            m.loss
        };
        let mut store = scaled.backward()?;
        sink.drain_into(&mut store)?;
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
    let mut comm_seconds = 0.0;
    let mut grads: Vec<Tensor> = if parallel {
        let t0 = Instant::now();
        let mut stats = [loss_sum, items as f64];
        comm.all_reduce_sum_f64(&mut stats)?;
        (loss_sum, items) = (stats[0], stats[1] as usize);
        let g = all_reduce_grads(vars, grads, comm)?;
        comm_seconds = t0.elapsed().as_secs_f64();
        g
    } else {
        grads
            .into_iter()
            .zip(vars)
            .map(|(g, v)| g.map_or_else(|| v.zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?
    };
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
    Ok(Some(StepDone {
        loss: loss_sum / done as f64,
        norm,
        items,
        comm_seconds,
    }))
}

/// A tensor's values as f32 on the host, in row-major order.
fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Sum each variable's gradient across ranks (zeros where this rank computed none): packed into
/// buckets of at most [`BUCKET`] values, last layers first (as the backward pass finishes them),
/// one all-reduce per bucket, all in flight together.
fn all_reduce_grads(
    vars: &[Var],
    grads: Vec<Option<Tensor>>,
    comm: &dyn Communicator,
) -> Result<Vec<Tensor>> {
    let mut buckets: Vec<Vec<f32>> = Vec::new();
    // (bucket, offset) of each variable's values.
    let mut at = vec![(0usize, 0usize); vars.len()];
    for i in (0..vars.len()).rev() {
        let n = vars[i].elem_count();
        if buckets
            .last()
            .is_none_or(|b| !b.is_empty() && b.len() + n > BUCKET)
        {
            buckets.push(Vec::with_capacity(n.min(BUCKET)));
        }
        let last = buckets.len() - 1;
        let b = &mut buckets[last];
        at[i] = (last, b.len());
        match &grads[i] {
            Some(g) => b.extend(host_f32(g)?),
            None => b.resize(b.len() + n, 0.0),
        }
    }
    comm.all_reduce_sum_f32(&mut buckets)?;
    vars.iter()
        .zip(at)
        .map(|(v, (b, off))| {
            let n = v.elem_count();
            let t = Tensor::from_slice(&buckets[b][off..off + n], v.shape(), v.device())?;
            Ok(t.to_dtype(v.dtype())?)
        })
        .collect()
}

/// Give every rank rank 0's values of `vars` (a data-parallel run starts from one set of
/// weights, whatever each rank initialized or loaded).
pub fn broadcast_vars(vars: &[Var], comm: &dyn Communicator) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    for v in vars {
        let mut buf = host_f32(v)?;
        comm.broadcast_f32(&mut buf, 0)?;
        let t = Tensor::from_vec(buf, v.shape(), v.device())?.to_dtype(v.dtype())?;
        v.set(&t)?;
    }
    Ok(())
}

/// A hash of the variables' exact values (ranks compare it: they must hold the same weights).
pub fn hash_vars(vars: &[Var]) -> Result<u64> {
    // FNV-1a over the f32 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in vars {
        for x in host_f32(v)? {
            h = (h ^ u64::from(x.to_bits())).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Ok(h)
}

/// Train `obj` as `plan` says, from `state`, until steps, epochs, time or patience run out or
/// `plan.stop` is set. `rng` drives shuffles and dropout (through the objective).
///
/// With several ranks ([`Plan::comm`]): every rank runs this with the same objective, state and
/// generator; rank 0's weights are broadcast first; the decisions to stop (any rank's stop flag,
/// rank 0's clock, rank 0's evaluations) are shared, so every rank leaves after the same step.
/// Only rank 0 evaluates, calls the objective's and the observer's hooks and writes
/// `metrics.jsonl`.
pub fn run(
    obj: &mut dyn Objective,
    opt: &mut AdamW,
    rng: &mut Rng,
    state: &mut RunState,
    plan: &Plan<'_>,
    obs: &mut dyn Observer,
) -> Result<Ended> {
    let comm = plan.comm;
    let root = comm.rank() == 0;
    let mut log = match &plan.metrics {
        Some(p) if root => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))?,
        ),
        _ => None,
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
    let mut last_eval_step = None;
    // The variables are shared handles (the objective builds its model on the same ones).
    let vars: Vec<Var> = obj.params().vars.clone();
    let names: Vec<String> = obj.params().specs.iter().map(|s| s.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    if comm.size() > 1 {
        let position = (state.step as u64) << 32 ^ (state.epoch as u64) << 16 ^ opt.step;
        crate::dist::check_same(comm, position, "the step to start from")?;
        broadcast_vars(&vars, comm)?;
    }
    // Why to stop before the next step, the same on every rank: any rank's stop flag, rank 0's
    // clock.
    let halt = |eval_time: Duration| -> Result<Option<Ended>> {
        let stop = plan.stop.is_some_and(|s| s.load(Ordering::SeqCst));
        let out_of_time = root
            && plan
                .max_time
                .is_some_and(|m| start.elapsed().saturating_sub(eval_time) >= m);
        let mut flags = [f64::from(u8::from(stop)), f64::from(u8::from(out_of_time))];
        comm.all_reduce_sum_f64(&mut flags)?;
        Ok(if flags[0] > 0.0 {
            Some(Ended::Interrupted)
        } else if flags[1] > 0.0 {
            Some(Ended::TimeLimit)
        } else {
            None
        })
    };
    let mut ended = Ended::Finished;
    'epochs: while state.epoch < plan.epochs && state.step < plan.max_steps {
        let epoch = state.epoch + 1;
        obj.start_epoch(epoch, rng)?;
        let t0 = Instant::now();
        let (mut loss_sum, mut steps, mut items) = (0.0, 0usize, 0usize);
        let mut exhausted = false;
        while state.step < plan.max_steps {
            if let Some(why) = halt(eval_time)? {
                ended = why;
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
                comm,
                |shard| obj.next_micro(rng, shard),
            )?;
            let Some(d) = result else {
                exhausted = true;
                break;
            };
            let (loss, norm, n) = (d.loss, d.norm, d.items);
            state.step += 1;
            let s = StepStats {
                step: state.step,
                epoch,
                loss,
                lr,
                grad_norm: norm,
                items: n,
                seconds: ts.elapsed().as_secs_f64(),
                comm_seconds: d.comm_seconds,
            };
            (loss_sum, steps, items) = (loss_sum + loss, steps + 1, items + n);
            if root {
                let mut line = json!({"step": s.step, "loss": loss, "lr": lr,
                                      "grad_norm": norm, "seconds": s.seconds});
                if plan.epochs != usize::MAX {
                    line["epoch"] = json!(epoch);
                }
                if comm.size() > 1 {
                    line["ranks"] = json!(comm.size());
                    line["allreduce_seconds"] = json!(d.comm_seconds);
                }
                line[format!("{}_per_s", obj.items_name())] = json!(n as f64 / s.seconds.max(1e-9));
                write(line)?;
                obs.on_step(&s);
                obj.on_step(&s, opt, rng, start.elapsed().as_secs_f64())?;
            }
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
        if root {
            obs.on_epoch(
                epoch,
                loss_sum / steps as f64,
                items as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            );
        }
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
    if comm.size() > 1 {
        crate::dist::check_same(comm, hash_vars(&vars)?, "the trained weights")?;
    }
    Ok(ended)
}

/// Evaluate (rank 0), keep track of the best, log (with the training seconds so far, this
/// process's: `start` less `eval_time`, which grows by the evaluation's own time), tell the
/// objective and the observer; true, on every rank, when `patience` evaluations in a row brought
/// nothing better.
fn evaluate(
    obj: &mut dyn Objective,
    obs: &mut dyn Observer,
    state: &mut RunState,
    plan: &Plan<'_>,
    write: &mut dyn FnMut(Value) -> Result<()>,
    start: Instant,
    eval_time: &mut Duration,
) -> Result<bool> {
    // A failed evaluation on rank 0 returns here; the program then aborts the job.
    let verdict =
        plan.comm.rank() == 0 && evaluate_here(obj, obs, state, plan, write, start, eval_time)?;
    // Rank 0's verdict, shared.
    let mut flag = [f64::from(u8::from(verdict))];
    plan.comm.all_reduce_sum_f64(&mut flag)?;
    Ok(flag[0] > 0.0)
}

fn evaluate_here(
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
