//! Decoding an encoder-decoder: greedy and beam search, as transformers' `generate` defines
//! them (so that the same checkpoint gives the same output in both).
//!
//! Beam search keeps, per source sentence, `num_beams` running hypotheses and up to `num_beams`
//! finished ones. Each step scores every continuation of every running beam (cumulative log
//! probabilities), takes the best `2·num_beams`, moves those that end (the end token, or the
//! length limit) among the top `num_beams` into the finished set with the length-normalized score
//! `sum log p / len^length_penalty`, and continues with the best `num_beams` that did not end.
//! A sentence stops when `early_stopping` says no running beam can still improve its finished set
//! ([`EarlyStopping`]). When the model forces the end token at the length limit
//! (`forced_eos_token_id`), the last step allows nothing else.
//!
//! The encoder runs once per batch (the tensor engine); its output is projected once per sentence
//! into every layer's cross-attention keys and values. Every step then runs the decoder's
//! inference backend ([`crate::infer::Decoder`], a KV cache per beam) on all running beams of all
//! sentences as one batch, one token each; beam search reorders the caches as beams are chosen (a
//! parent's first child takes its cache as it is, further children copy it).

use crate::infer::{Batch, CrossMemory, Decoder, State};
use crate::models::seq2seq::{pad_sources, Seq2Seq};
use crate::{Error, Result};
use std::sync::Arc;

/// When beam search stops (transformers' `early_stopping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStopping {
    /// As soon as `num_beams` hypotheses are finished (`True`).
    Yes,
    /// When the best running beam, scored at the current length, cannot beat the worst finished
    /// one (`False`, transformers' default heuristic).
    No,
    /// Only when no running beam can improve at any length up to the limit (`"never"`: the
    /// canonical beam search).
    Never,
}

/// Decoding settings.
#[derive(Clone, Debug)]
pub struct Seq2SeqGenerate {
    /// 1 = greedy.
    pub num_beams: usize,
    /// Tokens generated at most (the end token included).
    pub max_new_tokens: usize,
    /// Exponent of the length normalization of finished beams' scores.
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    /// Hypotheses returned per sentence (≤ `num_beams`), best first.
    pub num_return_sequences: usize,
    /// Sample instead of taking the most likely token (`num_beams` 1 only): temperature, top-k/p,
    /// min-p, repetition penalty; sentence i draws from its own generator (seed + i), so a
    /// sentence's output does not depend on the batch it is in. `None` or temperature 0: greedy.
    pub sampling: Option<super::SamplingParams>,
}

impl Default for Seq2SeqGenerate {
    fn default() -> Self {
        Seq2SeqGenerate {
            num_beams: 1,
            max_new_tokens: 256,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::No,
            num_return_sequences: 1,
            sampling: None,
        }
    }
}

/// One output sequence.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hypothesis {
    /// Generated ids (the start token excluded, the end token included when it was produced).
    pub tokens: Vec<u32>,
    /// Beam search: the length-normalized score; greedy or sampled: the sum of log probabilities.
    pub score: f64,
}

impl Hypothesis {
    /// The ids without the end token.
    pub fn content(&self, eos: u32) -> &[u32] {
        match self.tokens.last() {
            Some(&t) if t == eos => &self.tokens[..self.tokens.len() - 1],
            _ => &self.tokens,
        }
    }
}

/// A masked score (transformers' -1e9: finished or impossible candidates).
const MASKED: f32 = -1.0e9;

/// Log-softmax of one row, in f32 as transformers computes it.
fn log_softmax(row: &mut [f32]) {
    let lse = log_sum_exp(row);
    row.iter_mut().for_each(|x| *x -= lse);
}

/// log Σ e^x of a row, in f32 (the vectorized exponential of the softmax kernels).
fn log_sum_exp(row: &[f32]) -> f32 {
    use crate::kernels::fast_exp;
    let m = fast_exp::max(row);
    m + fast_exp::exp_sum(row, 1.0, m).ln()
}

/// A batch's encoder outputs and the decoder backend that reads them.
struct Decoding<'m> {
    model: &'m Seq2Seq,
    backend: &'m Decoder,
    /// Each sentence's encoder output, projected for every layer's cross-attention.
    memories: Vec<Arc<CrossMemory>>,
    batch: Batch,
    start: u32,
    vocab: usize,
    /// Positions a state holds (the start token and every generated token).
    cap: usize,
}

impl<'m> Decoding<'m> {
    fn new(model: &'m Seq2Seq, backend: &'m Decoder, srcs: &[&[u32]], cap: usize) -> Result<Self> {
        let cfg = &model.cfg;
        let max = cfg.encoder.max_position_embeddings;
        if let Some(long) = srcs.iter().map(|x| x.len()).find(|&n| n > max) {
            return Err(Error::Input(format!(
                "a source of {long} tokens exceeds the model's maximum of {max}"
            )));
        }
        let (ids, mask, lens) = pad_sources(srcs, cfg.pad()?, cfg.eos()?, model.decoder.device())?;
        let s = ids.dim(1)?;
        let memory = model.encode(&ids, &mask, None)?; // (B, S, C)
        let c = cfg.encoder.hidden_size;
        let memory: Vec<f32> = memory
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        // Each sentence's real positions only: padding is never attended to.
        let memories = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| backend.cross_memory(&memory[i * s * c..(i * s + len) * c], len))
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoding {
            batch: backend.new_batch(),
            backend,
            memories,
            start: cfg.decoder_start_token_id,
            vocab: cfg.decoder.vocab_size,
            cap,
            model,
        })
    }

    /// A fresh state of sentence `item` (nothing decoded yet).
    fn state(&self, item: usize) -> Result<State> {
        let mut st = self.backend.new_state(self.cap)?;
        self.backend
            .set_memory(&mut st, self.memories[item].clone())?;
        Ok(st)
    }

    /// Feed each state its next token; the next-token logits, (states × V): the batch's buffer,
    /// for the caller to score in place.
    fn step(&mut self, states: &mut [State], tokens: &[u32]) -> Result<&mut [f32]> {
        let mut refs: Vec<&mut State> = states.iter_mut().collect();
        self.backend.step(&mut self.batch, &mut refs, tokens)
    }
}

/// Decode `srcs` (token ids, the end token included as the tokenizer gives it) with greedy or
/// beam search; per sentence, `num_return_sequences` hypotheses, best first.
pub fn generate_seq2seq(
    model: &Seq2Seq,
    srcs: &[&[u32]],
    opts: &Seq2SeqGenerate,
) -> Result<Vec<Vec<Hypothesis>>> {
    generate_seq2seq_with(model, &model.inference_decoder()?, srcs, opts)
}

/// [`generate_seq2seq`] with the decoder backend built once by the caller
/// ([`Seq2Seq::inference_decoder`]) for many batches.
pub fn generate_seq2seq_with(
    model: &Seq2Seq,
    backend: &Decoder,
    srcs: &[&[u32]],
    opts: &Seq2SeqGenerate,
) -> Result<Vec<Vec<Hypothesis>>> {
    if opts.num_beams == 0 {
        return Err(Error::Input("num_beams must be at least 1".into()));
    }
    let sampled = opts.sampling.as_ref().is_some_and(|p| p.temperature > 0.0);
    if sampled && opts.num_beams > 1 {
        return Err(Error::Input(
            "sampling decodes one beam (beam search is deterministic)".into(),
        ));
    }
    if let Some(p) = &opts.sampling {
        p.validate()?;
    }
    if opts.num_return_sequences == 0 || opts.num_return_sequences > opts.num_beams {
        return Err(Error::Input(format!(
            "num_return_sequences must be between 1 and num_beams ({}), got {}",
            opts.num_beams, opts.num_return_sequences
        )));
    }
    let max_pos = model.cfg.decoder.max_position_embeddings;
    if opts.max_new_tokens + 1 > max_pos {
        return Err(Error::Input(format!(
            "max_new_tokens {} does not fit the decoder's {max_pos} positions (start token \
             included)",
            opts.max_new_tokens
        )));
    }
    if srcs.is_empty() || opts.max_new_tokens == 0 {
        return Ok(srcs.iter().map(|_| vec![]).collect());
    }
    let mut dec = Decoding::new(model, backend, srcs, opts.max_new_tokens + 1)?;
    if opts.num_beams == 1 {
        greedy(&mut dec, srcs.len(), opts)
    } else {
        beam(&mut dec, srcs.len(), opts)
    }
}

/// The forced end token at the length limit: every other logit masked (`cur_len` counts the
/// start token).
fn force_eos(model: &Seq2Seq, row: &mut [f32], cur_len: usize, max_length: usize) {
    if let Some(eos) = model.cfg.forced_eos_token_id {
        if cur_len + 1 == max_length && (eos as usize) < row.len() {
            row.fill(f32::NEG_INFINITY);
            row[eos as usize] = 0.0;
        }
    }
}

fn greedy(
    dec: &mut Decoding<'_>,
    b: usize,
    opts: &Seq2SeqGenerate,
) -> Result<Vec<Vec<Hypothesis>>> {
    let model = dec.model;
    let eos = model.cfg.eos()?;
    let v = dec.vocab;
    let max_length = opts.max_new_tokens + 1;
    let mut hyps: Vec<Hypothesis> = (0..b)
        .map(|_| Hypothesis {
            tokens: vec![],
            score: 0.0,
        })
        .collect();
    let mut open: Vec<usize> = (0..b).collect();
    let mut states = (0..b).map(|i| dec.state(i)).collect::<Result<Vec<_>>>()?;
    let mut samplers: Vec<Option<super::Sampler>> = (0..b)
        .map(|i| {
            opts.sampling
                .as_ref()
                .filter(|p| p.temperature > 0.0)
                .map(|p| {
                    super::Sampler::new(super::SamplingParams {
                        seed: p.seed.wrapping_add(i as u64),
                        ..p.clone()
                    })
                })
        })
        .collect();
    let mut cur_len = 1;
    while !open.is_empty() && cur_len < max_length {
        let last: Vec<u32> = open
            .iter()
            .map(|&i| *hyps[i].tokens.last().unwrap_or(&dec.start))
            .collect();
        let logits = dec.step(&mut states, &last)?;
        let mut keep = vec![];
        for (r, &i) in open.iter().enumerate() {
            let row = &mut logits[r * v..(r + 1) * v];
            force_eos(model, row, cur_len, max_length);
            let tok = match &mut samplers[i] {
                Some(s) => s.sample(row, &hyps[i].tokens),
                None => super::sampler::argmax(row),
            };
            log_softmax(row);
            let h = &mut hyps[i];
            h.score += row[tok as usize] as f64;
            h.tokens.push(tok);
            keep.push(tok != eos);
        }
        let mut k = keep.iter();
        open.retain(|_| *k.next().expect("one flag per row"));
        let mut k = keep.iter();
        states.retain(|_| *k.next().expect("one flag per row"));
        cur_len += 1;
    }
    Ok(hyps.into_iter().map(|h| vec![h]).collect())
}

/// One sentence's beam search state.
struct Beams {
    /// Running hypotheses (tokens, cumulative log probability, the beam they continue), best
    /// first.
    running: Vec<(Vec<u32>, f32, usize)>,
    /// Their decoder states (KV caches), in the same order.
    states: Vec<State>,
    /// Finished slots (tokens, normalized score, finished?), best first.
    finished: Vec<(Vec<u32>, f32, bool)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied`.
    improvable: bool,
    done: bool,
}

fn beam(dec: &mut Decoding<'_>, b: usize, opts: &Seq2SeqGenerate) -> Result<Vec<Vec<Hypothesis>>> {
    let (model, backend) = (dec.model, dec.backend);
    let eos = model.cfg.eos()?;
    let (v, nb) = (dec.vocab, opts.num_beams);
    let keep = 2 * nb; // one end token: max(2, 1 + 1) beams per kept beam
    let max_length = opts.max_new_tokens + 1;
    let lp = opts.length_penalty;
    let mut sents: Vec<Beams> = (0..b)
        .map(|i| {
            Ok(Beams {
                running: (0..nb)
                    .map(|k| (vec![], if k == 0 { 0.0 } else { MASKED }, k))
                    .collect(),
                states: (0..nb).map(|_| dec.state(i)).collect::<Result<_>>()?,
                finished: (0..nb).map(|_| (vec![], MASKED, false)).collect(),
                improvable: true,
                done: false,
            })
        })
        .collect::<Result<_>>()?;
    // Spare states the reordered caches are copied into.
    let mut spare: Vec<State> = (0..nb).map(|_| dec.state(0)).collect::<Result<_>>()?;
    let mut cur_len = 1;
    loop {
        let active: Vec<usize> = (0..b).filter(|&i| !sents[i].done).collect();
        if active.is_empty() {
            break;
        }
        // Every running beam of every active sentence, one token each, as one batch.
        let last: Vec<u32> = active
            .iter()
            .flat_map(|&i| {
                sents[i]
                    .running
                    .iter()
                    .map(|(t, _, _)| *t.last().unwrap_or(&dec.start))
            })
            .collect();
        let mut states: Vec<State> = active
            .iter()
            .flat_map(|&i| std::mem::take(&mut sents[i].states))
            .collect();
        let logits = dec.step(&mut states, &last);
        let mut states = states.into_iter();
        for &i in &active {
            sents[i].states = states.by_ref().take(nb).collect();
        }
        let logits = logits?;
        let forced = model.cfg.forced_eos_token_id.is_some() && cur_len + 1 == max_length;
        for (a, &i) in active.iter().enumerate() {
            let s = &mut sents[i];
            let block = &mut logits[a * nb * v..(a + 1) * nb * v];
            // The best `keep` continuations over all beams (ties: the lower index first), scored
            // log_softmax(logits) + the beam's score: each beam's best `keep` (the overall best
            // are among them), then the best of those. log-softmax keeps a row's order, so a
            // row's best are found on its logits and only they are transformed, as
            // `(x - lse) + base` (transformers' f32 operations on those entries).
            let mut top: Vec<(f32, usize)> = Vec::with_capacity(nb * keep);
            for (k, row) in block.chunks_mut(v).enumerate() {
                let base = s.running[k].1;
                let start = top.len();
                if forced {
                    log_softmax(row);
                    force_eos(model, row, cur_len, max_length);
                    row.iter_mut().for_each(|x| *x += base);
                    top_k_row(row, k * v, keep, &mut top);
                } else {
                    let lse = log_sum_exp(row);
                    top_k_row(row, k * v, keep, &mut top);
                    for t in &mut top[start..] {
                        t.0 = (t.0 - lse) + base;
                    }
                }
            }
            top.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            top.truncate(keep);
            let cands: Vec<(Vec<u32>, f32, bool, usize)> = top
                .iter()
                .map(|&(score, idx)| {
                    let (beam, tok) = (idx / v, (idx % v) as u32);
                    let mut t = s.running[beam].0.clone();
                    t.push(tok);
                    let ends = tok == eos || cur_len + 1 >= max_length;
                    (t, score, ends, beam)
                })
                .collect();
            // Finished candidates among the top `nb` join the finished slots if they beat them.
            let full = s.finished.iter().all(|f| f.2) && opts.early_stopping == EarlyStopping::Yes;
            let norm = (cur_len as f64).powf(lp) as f32;
            let mut merged: Vec<(Vec<u32>, f32, bool)> = std::mem::take(&mut s.finished);
            for (r, (t, score, ends, _)) in cands.iter().enumerate() {
                let joins = *ends && r < nb;
                let mut sc = score / norm;
                if full {
                    sc += MASKED;
                }
                if !s.improvable {
                    sc += MASKED;
                }
                if !joins {
                    sc += MASKED;
                }
                merged.push((t.clone(), sc, joins));
            }
            stable_top(&mut merged, nb, |m| m.1);
            s.finished = merged;
            // The best `nb` candidates that did not end keep running.
            let mut running: Vec<(Vec<u32>, f32, usize)> = cands
                .into_iter()
                .map(|(t, sc, ends, beam)| (t, if ends { sc + MASKED } else { sc }, beam))
                .collect();
            stable_top(&mut running, nb, |r| r.1);
            // Reorder the caches: beam k continues its parent's. A parent's first child takes
            // the parent's state itself; only further children get copies (made before any
            // state moves), so a beam that keeps its place costs nothing.
            let mut first = vec![usize::MAX; nb];
            for (k, r) in running.iter().enumerate() {
                if first[r.2] == usize::MAX {
                    first[r.2] = k;
                }
            }
            for (k, r) in running.iter().enumerate() {
                if first[r.2] != k {
                    let parent = &s.states[r.2];
                    backend.copy_prefix(&mut spare[k], parent, parent.len())?;
                }
            }
            for (k, r) in running.iter().enumerate() {
                if first[r.2] == k {
                    std::mem::swap(&mut spare[k], &mut s.states[r.2]);
                }
            }
            std::mem::swap(&mut s.states, &mut spare);
            s.running = running;
        }
        cur_len += 1;
        for &i in &active {
            let s = &mut sents[i];
            let best_len = if opts.early_stopping == EarlyStopping::Never && lp > 0.0 {
                max_length - 1
            } else {
                cur_len - 1
            };
            let best_possible = s.running[0].1 / (best_len as f64).powf(lp) as f32;
            let all_finished = s.finished.iter().all(|f| f.2);
            let worst = s.finished.iter().map(|f| f.1).fold(f32::INFINITY, f32::min);
            s.improvable &= !all_finished || best_possible > worst;
            let full = all_finished && opts.early_stopping == EarlyStopping::Yes;
            s.done = !s.improvable || full || cur_len >= max_length;
        }
    }
    Ok(sents
        .into_iter()
        .map(|s| {
            s.finished
                .into_iter()
                .take(opts.num_return_sequences)
                .map(|(tokens, score, _)| Hypothesis {
                    tokens,
                    score: score as f64,
                })
                .collect()
        })
        .collect())
}

/// Append the `k` best entries of `row` as (score, `base` + index), best first; among equal
/// scores the lower index first (a later equal score never displaces an earlier one).
fn top_k_row(row: &[f32], base: usize, k: usize, out: &mut Vec<(f32, usize)>) {
    let start = out.len();
    for (j, &x) in row.iter().enumerate() {
        let best = &out[start..];
        if best.len() == k && x.partial_cmp(&best[k - 1].0) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let p = start + best.partition_point(|e| e.0 >= x);
        out.insert(p, (x, base + j));
        if out.len() - start > k {
            out.pop();
        }
    }
}

/// Keep the `k` highest-scoring items, best first; equal scores keep their order (as the
/// concatenation order transformers' `topk` sees).
fn stable_top<T>(items: &mut Vec<T>, k: usize, score: impl Fn(&T) -> f32) {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by(|&a, &b| {
        score(&items[b])
            .total_cmp(&score(&items[a]))
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    let mut taken: Vec<Option<T>> = std::mem::take(items).into_iter().map(Some).collect();
    *items = idx.into_iter().filter_map(|i| taken[i].take()).collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_top_keeps_order_of_ties() {
        let mut v = vec![("a", 1.0), ("b", 3.0), ("c", 1.0), ("d", 3.0)];
        stable_top(&mut v, 3, |x| x.1);
        assert_eq!(v, [("b", 3.0), ("d", 3.0), ("a", 1.0)]);
    }

    #[test]
    fn top_k_row_is_sorted_with_ties_by_index() {
        let mut out = vec![];
        top_k_row(
            &[1.0, 3.0, f32::NEG_INFINITY, 3.0, 2.0, 3.0],
            10,
            3,
            &mut out,
        );
        assert_eq!(out, [(3.0, 11), (3.0, 13), (3.0, 15)]);
        top_k_row(&[0.5, -1.0], 20, 3, &mut out);
        assert_eq!(out[3..], [(0.5, 20), (-1.0, 21)]);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let mut r = [1.0f32, 2.0, 3.0];
        log_softmax(&mut r);
        let s: f32 = r.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
