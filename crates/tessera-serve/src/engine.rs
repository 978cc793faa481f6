//! The continuous-batching engine: one OS thread owns the model and `parallel` sequence slots
//! (each a preallocated KV cache). Requests wait in a bounded queue; at every decode step the
//! waiting ones join (placed in a free slot, reusing the longest cached prompt prefix any slot
//! holds), every active sequence advances by one token in a single batched step
//! ([`Decoder::step_many`]: one product per weight for all of them; a joining sequence's
//! uncached prompt tokens ride in the same step while it stays below the products' kernel
//! switch, else they run alone first), and finished or cancelled ones leave, freeing their slot
//! at once.

use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;
use tessera::generate::json::{mask_logits, token_texts, Constraint};
use tessera::generate::{FinishReason, Sampler, SamplingParams, TextOutput};
use tessera::infer::{Batch, Decoder, State};
use tessera::kernels::quant::matmul::F32_GEMM_MIN_ROWS;
use tessera::tokenizer::chat::ModelTokenizer;
use tokio::sync::mpsc::UnboundedSender;

/// Log-probabilities asked for with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogprobsSpec {
    /// Alternatives to report per position (0: only the chosen token's).
    pub top: usize,
}

/// One generation request: `n` choices from one prompt.
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub n: usize,
    pub logprobs: Option<LogprobsSpec>,
    /// Constrain the output: a JSON object or an instance of a JSON schema (`response_format`).
    pub json: Option<Constraint>,
    /// Where the tokens go; a dropped receiver (client gone) cancels the request.
    pub events: UnboundedSender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub received: Instant,
}

/// One token's log-probability and the most likely alternatives (log-softmax of the model's
/// logits, before temperature and filters).
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What the engine sends back.
#[derive(Debug)]
pub enum Event {
    /// Text for choice `index` (possibly empty when the token's text is held back: an incomplete
    /// character or the beginning of a stop string), with the token's log-probability if asked.
    Token {
        index: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Choice `index` ended.
    Done {
        index: usize,
        finish: FinishReason,
        completion_tokens: usize,
    },
    /// The request failed (the message is for the client).
    Error(String),
}

/// Why a request was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full (429).
    Busy,
    /// The engine has stopped.
    Closed,
}

/// The HTTP side's handle on the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<GenRequest>,
    /// Choices queued and not yet in a slot (the engine takes them off as it admits them).
    pending: Arc<AtomicUsize>,
    limit: usize,
}

impl EngineHandle {
    /// Queue a request without waiting: refused when its choices would take the number waiting
    /// for a slot over the queue limit.
    pub fn submit(&self, r: GenRequest) -> Result<(), SubmitError> {
        let n = r.n.max(1);
        if self.pending.fetch_add(n, Ordering::SeqCst) + n > self.limit {
            self.pending.fetch_sub(n, Ordering::SeqCst);
            return Err(SubmitError::Busy);
        }
        self.tx.try_send(r).map_err(|e| {
            self.pending.fetch_sub(n, Ordering::SeqCst);
            match e {
                TrySendError::Full(_) => SubmitError::Busy,
                TrySendError::Disconnected(_) => SubmitError::Closed,
            }
        })
    }
}

/// Start the engine thread; `queue` requests may wait beyond the running ones.
pub fn start(
    model: Decoder,
    tok: Arc<ModelTokenizer>,
    parallel: usize,
    ctx: usize,
    queue: usize,
    metrics: Arc<Metrics>,
) -> anyhow::Result<EngineHandle> {
    let queue = queue.max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel(queue);
    let pending = Arc::new(AtomicUsize::new(0));
    // Allocate the slots now: a context that does not fit in memory is a startup error.
    let slots = (0..parallel.max(1))
        .map(|_| {
            Ok(Slot {
                state: model.new_state(ctx)?,
                tokens: Vec::new(),
                busy: false,
            })
        })
        .collect::<tessera::Result<Vec<_>>>()?;
    std::thread::Builder::new()
        .name("tessera-engine".into())
        .spawn({
            let pending = pending.clone();
            move || Engine::new(model, &tok, slots, metrics, pending).run(rx)
        })?;
    Ok(EngineHandle {
        tx,
        pending,
        limit: queue,
    })
}

/// A sequence slot: a KV cache and the tokens it holds (kept after the sequence ends, so a later
/// prompt with the same prefix reuses them).
struct Slot {
    state: State,
    tokens: Vec<u32>,
    busy: bool,
}

/// A request's shared part, for its choices.
struct Shared {
    events: UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    logprobs: Option<LogprobsSpec>,
    json: Option<Constraint>,
    received: Instant,
    first_token: AtomicBool,
}

impl Shared {
    fn send(&self, e: Event) -> bool {
        self.events.send(e).is_ok()
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// One choice being generated.
struct Seq<'t> {
    req: Arc<Shared>,
    index: usize,
    slot: usize,
    sampler: Sampler,
    out: TextOutput<'t>,
    /// Prompt + generated tokens (the repetition penalty's context).
    history: Vec<u32>,
    generated: usize,
    max_tokens: usize,
    ignore_eos: bool,
    /// The token to feed at the next step.
    next: u32,
    /// The prompt tokens still to feed (not cached in the slot): a joining choice's prompt,
    /// fed in the next step beside the running choices' tokens; empty once it has run.
    prompt_tail: Vec<u32>,
    started: Instant,
    /// The recognizer of a constrained choice.
    json: Option<Constraint>,
}

/// A choice waiting for a slot.
struct Job {
    req: Arc<Shared>,
    index: usize,
    prompt: Arc<Vec<u32>>,
    params: SamplingParams,
}

struct Engine<'t> {
    model: Decoder,
    tok: &'t ModelTokenizer,
    slots: Vec<Slot>,
    batch: Batch,
    metrics: Arc<Metrics>,
    eos: Option<u32>,
    waiting: std::collections::VecDeque<Job>,
    active: Vec<Seq<'t>>,
    /// Reused buffers of a step.
    lp: Vec<f32>,
    top_idx: Vec<u32>,
    masked: Vec<f32>,
    /// Each token's text, for JSON-constrained choices (computed on first use).
    token_texts: Option<Vec<Option<String>>>,
    /// Shared with [`EngineHandle`]: choices not yet in a slot.
    pending: Arc<AtomicUsize>,
}

/// Length of the common prefix of two id lists.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Log-softmax of `logits` into `out`.
fn log_softmax(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    out.clear();
    out.extend(logits.iter().map(|&x| x - lse));
}

impl<'t> Engine<'t> {
    fn new(
        model: Decoder,
        tok: &'t ModelTokenizer,
        slots: Vec<Slot>,
        metrics: Arc<Metrics>,
        pending: Arc<AtomicUsize>,
    ) -> Self {
        let eos = model.cfg.eos_token_id.or(tok.eos_id);
        Engine {
            batch: model.new_batch(),
            model,
            tok,
            slots,
            metrics,
            eos,
            waiting: Default::default(),
            active: Vec::new(),
            lp: Vec::new(),
            top_idx: Vec::new(),
            masked: Vec::new(),
            token_texts: None,
            pending,
        }
    }

    fn run(mut self, rx: Receiver<GenRequest>) {
        loop {
            // Idle: block for work; busy: take what has arrived.
            if self.active.is_empty() && self.waiting.is_empty() {
                match rx.recv() {
                    Ok(r) => self.accept(r),
                    Err(_) => return,
                }
            }
            while let Ok(r) = rx.try_recv() {
                self.accept(r);
            }
            self.metrics
                .queue_depth
                .store(self.waiting.len() as u64, Ordering::Relaxed);
            self.admit();
            self.step();
            self.metrics
                .active
                .store(self.active.len() as u64, Ordering::Relaxed);
        }
    }

    fn accept(&mut self, r: GenRequest) {
        let shared = Arc::new(Shared {
            events: r.events,
            cancel: r.cancel,
            logprobs: r.logprobs,
            json: r.json,
            received: r.received,
            first_token: AtomicBool::new(false),
        });
        let prompt = Arc::new(r.prompt);
        for index in 0..r.n.max(1) {
            let mut params = r.params.clone();
            // Each choice its own stream of random numbers, reproducible from the seed.
            params.seed = params.seed.wrapping_add(index as u64);
            self.waiting.push_back(Job {
                req: shared.clone(),
                index,
                prompt: prompt.clone(),
                params,
            });
        }
    }

    /// Move waiting jobs into free slots (prefill and first token).
    fn admit(&mut self) {
        while let Some(job) = self.waiting.front() {
            if job.req.cancelled() {
                self.waiting.pop_front();
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.metrics.cancelled.add(1);
                continue;
            }
            let Some(slot) = self.pick_slot(&job.prompt) else {
                return;
            };
            let job = self.waiting.pop_front().expect("front exists");
            self.pending.fetch_sub(1, Ordering::SeqCst);
            let req = job.req.clone();
            if let Err(e) = self.prefill(job, slot) {
                req.send(Event::Error(format!("prefill failed: {e}")));
                // The slot's cache content is unknown after a failure.
                self.slots[slot].tokens.clear();
                self.slots[slot].state.clear();
                self.slots[slot].busy = false;
            }
        }
    }

    /// The free slot to run `prompt` in: the one holding the longest prefix of it, else the one
    /// whose cached tokens are least useful (shortest).
    fn pick_slot(&self, prompt: &[u32]) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .max_by_key(|(_, s)| {
                (
                    common_prefix(&s.tokens, prompt),
                    usize::MAX - s.tokens.len(),
                )
            })
            .map(|(i, _)| i)
    }

    fn prefill(&mut self, job: Job, slot: usize) -> tessera::Result<()> {
        let prompt = &job.prompt[..];
        let cap = self.slots[slot].state.capacity();
        if prompt.len() >= cap {
            job.req.send(Event::Error(format!(
                "the prompt has {} tokens; the context is {cap}",
                prompt.len()
            )));
            return Ok(());
        }
        // Reuse the longest cached prefix: in place, or copied from another slot (the prefix
        // cache: a shared system prompt is computed once). At least the last prompt token is fed.
        let own = common_prefix(&self.slots[slot].tokens, prompt)
            .min(self.slots[slot].state.len())
            .min(prompt.len() - 1);
        let (donor, best) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .map(|(i, s)| {
                (
                    i,
                    common_prefix(&s.tokens, prompt)
                        .min(s.state.len())
                        .min(prompt.len() - 1),
                )
            })
            .max_by_key(|&(_, n)| n)
            .unwrap_or((slot, 0));
        self.slots[slot].busy = true;
        let keep = if best > own && best >= 16 {
            let (a, b) = if donor < slot {
                let (l, r) = self.slots.split_at_mut(slot);
                (&mut r[0], &l[donor])
            } else {
                let (l, r) = self.slots.split_at_mut(donor);
                (&mut l[slot], &r[0])
            };
            self.model.copy_prefix(&mut a.state, &b.state, best)?;
            best
        } else {
            self.slots[slot].state.truncate(own);
            own
        };
        self.metrics.prompt_tokens.add(prompt.len() as u64);
        self.metrics.cached_prompt_tokens.add(keep as u64);
        let s = &mut self.slots[slot];
        s.tokens.clear();
        s.tokens.extend_from_slice(&prompt[..keep]);
        let params = job.params;
        let mut seq = Seq {
            req: job.req,
            index: job.index,
            slot,
            sampler: Sampler::new(params.clone()),
            out: TextOutput::new(&self.tok.tokenizer, &params.stop),
            history: prompt.to_vec(),
            generated: 0,
            max_tokens: params.max_tokens,
            ignore_eos: params.ignore_eos,
            next: 0,
            prompt_tail: Vec::new(),
            started: Instant::now(),
            json: None,
        };
        if let Some(c) = &seq.req.json {
            seq.json = Some(c.clone());
            if self.token_texts.is_none() {
                self.token_texts = Some(token_texts(&self.tok.tokenizer));
            }
        }
        // The uncached prompt joins the next step: its rows go through the products with the
        // running choices' tokens (the weights read once for all); `step` runs it alone first if
        // the step would grow too long.
        seq.prompt_tail = prompt[keep..].to_vec();
        self.active.push(seq);
        Ok(())
    }

    /// Rows the next step feeds: one per running choice, a joining choice's prompt tail.
    fn step_rows(&self) -> usize {
        self.active.iter().map(|s| s.prompt_tail.len().max(1)).sum()
    }

    /// A choice whose prompt has just run: its first token from `logits`; the choice if it runs
    /// on (else it has ended).
    fn first_token(&mut self, mut seq: Seq<'t>, logits: &[f32]) -> Option<Seq<'t>> {
        if seq.max_tokens == 0 {
            self.finish(seq, FinishReason::Length);
            return None;
        }
        match self.advance(&mut seq, logits) {
            Some(reason) => {
                self.finish(seq, reason);
                None
            }
            None => Some(seq),
        }
    }

    /// Sample the next token of `seq` from `logits` and send its text; `Some(reason)` when the
    /// sequence ends here.
    fn advance(&mut self, seq: &mut Seq<'t>, logits: &[f32]) -> Option<FinishReason> {
        if seq.req.cancelled() {
            return Some(FinishReason::Cancelled);
        }
        let id = match (&seq.json, &self.token_texts) {
            (Some(state), Some(texts)) => {
                self.masked.clear();
                self.masked.extend_from_slice(logits);
                if !mask_logits(state, texts, self.eos, &mut self.masked) {
                    seq.req
                        .send(Event::Error("no token can continue the JSON output".into()));
                    return Some(FinishReason::Cancelled);
                }
                seq.sampler.sample(&self.masked, &seq.history)
            }
            _ => seq.sampler.sample(logits, &seq.history),
        };
        let logprob = seq.req.logprobs.map(|spec| {
            log_softmax(logits, &mut self.lp);
            let mut top: Vec<(u32, f32)> = Vec::new();
            if spec.top > 0 {
                let idx = &mut self.top_idx;
                idx.clear();
                idx.extend(0..self.lp.len() as u32);
                let k = spec.top.min(idx.len());
                idx.select_nth_unstable_by(k - 1, |&a, &b| {
                    self.lp[b as usize].total_cmp(&self.lp[a as usize])
                });
                idx.truncate(k);
                idx.sort_by(|&a, &b| self.lp[b as usize].total_cmp(&self.lp[a as usize]));
                top = idx.iter().map(|&i| (i, self.lp[i as usize])).collect();
            }
            TokenLogprob {
                id,
                logprob: self.lp[id as usize],
                top,
            }
        });
        if !seq.req.first_token.swap(true, Ordering::Relaxed) {
            self.metrics
                .ttft
                .observe(seq.req.received.elapsed().as_secs_f64());
        }
        if Some(id) == self.eos && !seq.ignore_eos {
            return Some(FinishReason::Eos);
        }
        seq.generated += 1;
        seq.history.push(id);
        self.metrics.generation_tokens.add(1);
        let (mut text, stopped) = match seq.out.push(id) {
            Ok((t, s)) => (t.to_string(), s),
            Err(e) => {
                seq.req.send(Event::Error(format!("decoding failed: {e}")));
                return Some(FinishReason::Cancelled);
            }
        };
        let out_of_room = seq.generated >= seq.max_tokens
            || self.slots[seq.slot].state.len() + 1 > self.slots[seq.slot].state.capacity();
        let mut json_done = false;
        if let (Some(state), Some(texts)) = (seq.json.as_mut(), &self.token_texts) {
            let piece = texts[id as usize].as_deref().unwrap_or("");
            state.feed_str(piece);
            json_done = state.is_complete();
            if out_of_room && !json_done {
                // The budget ends inside the object: close it, so the output still parses.
                text.push_str(&state.closing_text());
            }
        }
        if !seq.req.send(Event::Token {
            index: seq.index,
            text,
            logprob,
        }) {
            return Some(FinishReason::Cancelled);
        }
        if stopped || json_done {
            return Some(FinishReason::Stop);
        }
        if out_of_room {
            return Some(FinishReason::Length);
        }
        seq.next = id;
        None
    }

    /// One decode step of every active sequence, in one batched forward pass.
    fn step(&mut self) {
        if self.active.is_empty() {
            return;
        }
        // Drop cancelled sequences before spending a step on them.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].req.cancelled() {
                let seq = self.active.swap_remove(i);
                self.finish(seq, FinishReason::Cancelled);
            } else {
                i += 1;
            }
        }
        // The step stays below the row count where the products change kernel, so that every
        // row keeps the numbers it gets when its request is served alone: joining prompts that
        // do not fit run alone first (the latest first).
        while self.step_rows() >= F32_GEMM_MIN_ROWS {
            let Some(i) = self.active.iter().rposition(|s| s.prompt_tail.len() > 1) else {
                break;
            };
            let mut seq = self.active.remove(i);
            let tail = std::mem::take(&mut seq.prompt_tail);
            let s = &mut self.slots[seq.slot];
            match self.model.forward(&mut s.state, &tail) {
                Ok(logits) => {
                    let logits = logits.to_vec();
                    s.tokens.extend_from_slice(&tail);
                    if let Some(seq) = self.first_token(seq, &logits) {
                        self.active.push(seq);
                    }
                }
                Err(e) => {
                    seq.req.send(Event::Error(format!("prefill failed: {e}")));
                    self.finish(seq, FinishReason::Cancelled);
                }
            }
        }
        if self.active.is_empty() {
            return;
        }
        debug_assert!(self.step_rows() < F32_GEMM_MIN_ROWS);
        let order: Vec<usize> = self.active.iter().map(|s| s.slot).collect();
        // The batch's buffers are taken out for the step so that its logits can be read while
        // the sequences advance (no copy of the (n, V) logits per step).
        let mut batch = std::mem::take(&mut self.batch);
        let logits = {
            // States in the order of `active` (each slot is used by one sequence).
            let mut by_slot: Vec<Option<&mut State>> =
                self.slots.iter_mut().map(|s| Some(&mut s.state)).collect();
            let mut refs: Vec<&mut State> = order
                .iter()
                .map(|&s| by_slot[s].take().expect("one sequence per slot"))
                .collect();
            let feeds: Vec<&[u32]> = self
                .active
                .iter()
                .map(|s| {
                    if s.prompt_tail.is_empty() {
                        std::slice::from_ref(&s.next)
                    } else {
                        &s.prompt_tail[..]
                    }
                })
                .collect();
            match self.model.step_many(&mut batch, &mut refs, &feeds) {
                Ok(l) => l,
                Err(e) => {
                    for seq in std::mem::take(&mut self.active) {
                        seq.req
                            .send(Event::Error(format!("decode step failed: {e}")));
                        self.finish(seq, FinishReason::Cancelled);
                    }
                    self.batch = batch;
                    return;
                }
            }
        };
        let v = self.model.cfg.vocab_size;
        let mut active = std::mem::take(&mut self.active);
        let mut keep = Vec::with_capacity(active.len());
        for (i, mut seq) in active.drain(..).enumerate() {
            let logits = &logits[i * v..(i + 1) * v];
            if !seq.prompt_tail.is_empty() {
                let tail = std::mem::take(&mut seq.prompt_tail);
                self.slots[seq.slot].tokens.extend_from_slice(&tail);
                keep.extend(self.first_token(seq, logits));
                continue;
            }
            self.slots[seq.slot].tokens.push(seq.next);
            match self.advance(&mut seq, logits) {
                Some(reason) => self.finish(seq, reason),
                None => keep.push(seq),
            }
        }
        self.active = keep;
        self.batch = batch;
    }

    /// End `seq`: flush its held-back text, report, free its slot.
    fn finish(&mut self, mut seq: Seq<'t>, reason: FinishReason) {
        let rest = seq.out.flush().to_string();
        if reason != FinishReason::Cancelled {
            if !rest.is_empty() {
                seq.req.send(Event::Token {
                    index: seq.index,
                    text: rest,
                    logprob: None,
                });
            }
            seq.req.send(Event::Done {
                index: seq.index,
                finish: reason,
                completion_tokens: seq.generated,
            });
            let secs = seq.started.elapsed().as_secs_f64();
            if seq.generated > 1 && secs > 0.0 {
                self.metrics
                    .decode_rate
                    .observe(seq.generated as f64 / secs);
            }
        } else {
            self.metrics.cancelled.add(1);
        }
        self.slots[seq.slot].busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_log_softmax() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        let mut out = Vec::new();
        log_softmax(&[1.0, 2.0, 3.0], &mut out);
        let total: f32 = out.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((out[2] - out[1] - 1.0).abs() < 1e-6);
    }
}
