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
//! The encoder runs once per batch; every step runs the decoder on all running beams of all
//! sentences as one batch (rows gather their sentence's encoder output).

use crate::models::block::Memory;
use crate::models::seq2seq::Seq2Seq;
use crate::{Error, Result};
use candle_core::Tensor;

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
}

impl Default for Seq2SeqGenerate {
    fn default() -> Self {
        Seq2SeqGenerate {
            num_beams: 1,
            max_new_tokens: 256,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::No,
            num_return_sequences: 1,
        }
    }
}

/// One output sequence.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hypothesis {
    /// Generated ids (the start token excluded, the end token included when it was produced).
    pub tokens: Vec<u32>,
    /// Beam search: the length-normalized score; greedy: the sum of log probabilities.
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
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = m + row.iter().map(|&x| (x - m).exp()).sum::<f32>().ln();
    row.iter_mut().for_each(|x| *x -= lse);
}

/// The encoder output of a batch and the decoder run over rows of it.
struct Decoding<'m> {
    model: &'m Seq2Seq,
    /// (B, S, C)
    memory: Tensor,
    /// (B, 1, 1, S)
    mask: Tensor,
    start: u32,
    vocab: usize,
}

impl<'m> Decoding<'m> {
    fn new(model: &'m Seq2Seq, srcs: &[&[u32]]) -> Result<Self> {
        let cfg = &model.cfg;
        let (pad, eos) = (cfg.pad()?, cfg.eos()?);
        let max = cfg.encoder.max_position_embeddings;
        let s = srcs.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
        if s > max {
            return Err(Error::Input(format!(
                "a source of {s} tokens exceeds the model's maximum of {max}"
            )));
        }
        let b = srcs.len();
        let mut ids = vec![pad; b * s];
        let mut mask = vec![0u32; b * s];
        for (i, x) in srcs.iter().enumerate() {
            ids[i * s..i * s + x.len()].copy_from_slice(x);
            mask[i * s..i * s + x.len()].fill(1);
            if x.is_empty() {
                ids[i * s] = eos;
                mask[i * s] = 1;
            }
        }
        let dev = model.decoder.device();
        let ids = Tensor::from_vec(ids, (b, s), dev)?;
        let mask = Tensor::from_vec(mask, (b, s), dev)?;
        let memory = model.encode(&ids, &mask, None)?;
        Ok(Decoding {
            memory,
            mask: model.memory_mask(&mask)?,
            start: cfg.decoder_start_token_id,
            vocab: cfg.decoder.vocab_size,
            model,
        })
    }

    /// Next-token logits (rows × V) of rows that have each generated `seqs[r]` so far for
    /// sentence `items[r]` (all the same length).
    fn logits(&self, items: &[usize], seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let r = items.len();
        let t = seqs.first().map_or(0, |s| s.len()) + 1;
        let mut ids = Vec::with_capacity(r * t);
        for s in seqs {
            debug_assert_eq!(s.len() + 1, t);
            ids.push(self.start);
            ids.extend_from_slice(s);
        }
        let dev = self.memory.device();
        let rows = Tensor::from_vec(items.iter().map(|&i| i as u32).collect(), r, dev)?;
        let memory = self.memory.index_select(&rows, 0)?;
        let mask = self.mask.index_select(&rows, 0)?;
        let tgt = Tensor::from_vec(ids, (r, t), dev)?;
        let h = self.model.decode_hidden(
            &tgt,
            Memory {
                states: &memory,
                mask: Some(&mask),
            },
            None,
        )?; // (R, T, C)
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        let logits = self.model.logits(&last)?; // (R, V)
        Ok(logits
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }
}

/// Decode `srcs` (token ids, the end token included as the tokenizer gives it) with greedy or
/// beam search; per sentence, `num_return_sequences` hypotheses, best first.
pub fn generate_seq2seq(
    model: &Seq2Seq,
    srcs: &[&[u32]],
    opts: &Seq2SeqGenerate,
) -> Result<Vec<Vec<Hypothesis>>> {
    if opts.num_beams == 0 {
        return Err(Error::Input("num_beams must be at least 1".into()));
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
    let dec = Decoding::new(model, srcs)?;
    if opts.num_beams == 1 {
        greedy(&dec, srcs.len(), opts)
    } else {
        beam(&dec, srcs.len(), opts)
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

fn greedy(dec: &Decoding<'_>, b: usize, opts: &Seq2SeqGenerate) -> Result<Vec<Vec<Hypothesis>>> {
    let eos = dec.model.cfg.eos()?;
    let v = dec.vocab;
    let max_length = opts.max_new_tokens + 1;
    let mut hyps: Vec<Hypothesis> = (0..b)
        .map(|_| Hypothesis {
            tokens: vec![],
            score: 0.0,
        })
        .collect();
    let mut open: Vec<usize> = (0..b).collect();
    let mut cur_len = 1;
    while !open.is_empty() && cur_len < max_length {
        let seqs: Vec<&[u32]> = open.iter().map(|&i| hyps[i].tokens.as_slice()).collect();
        let mut logits = dec.logits(&open, &seqs)?;
        let mut still = vec![];
        for (r, &i) in open.iter().enumerate() {
            let row = &mut logits[r * v..(r + 1) * v];
            force_eos(dec.model, row, cur_len, max_length);
            let tok = super::sampler::argmax(row);
            log_softmax(row);
            let h = &mut hyps[i];
            h.score += row[tok as usize] as f64;
            h.tokens.push(tok);
            if tok != eos {
                still.push(i);
            }
        }
        open = still;
        cur_len += 1;
    }
    Ok(hyps.into_iter().map(|h| vec![h]).collect())
}

/// One sentence's beam search state.
struct Beams {
    /// Running hypotheses (tokens, cumulative log probability), best first.
    running: Vec<(Vec<u32>, f32)>,
    /// Finished slots (tokens, normalized score, finished?), best first.
    finished: Vec<(Vec<u32>, f32, bool)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied`.
    improvable: bool,
    done: bool,
}

fn beam(dec: &Decoding<'_>, b: usize, opts: &Seq2SeqGenerate) -> Result<Vec<Vec<Hypothesis>>> {
    let eos = dec.model.cfg.eos()?;
    let (v, nb) = (dec.vocab, opts.num_beams);
    let keep = 2 * nb; // one end token: max(2, 1 + 1) beams per kept beam
    let max_length = opts.max_new_tokens + 1;
    let lp = opts.length_penalty;
    let mut sents: Vec<Beams> = (0..b)
        .map(|_| Beams {
            running: (0..nb)
                .map(|k| (vec![], if k == 0 { 0.0 } else { MASKED }))
                .collect(),
            finished: (0..nb).map(|_| (vec![], MASKED, false)).collect(),
            improvable: true,
            done: false,
        })
        .collect();
    let mut cur_len = 1;
    loop {
        let active: Vec<usize> = (0..b).filter(|&i| !sents[i].done).collect();
        if active.is_empty() {
            break;
        }
        let items: Vec<usize> = active.iter().flat_map(|&i| [i].repeat(nb)).collect();
        let seqs: Vec<&[u32]> = active
            .iter()
            .flat_map(|&i| sents[i].running.iter().map(|(t, _)| t.as_slice()))
            .collect();
        let mut logits = dec.logits(&items, &seqs)?;
        for (a, &i) in active.iter().enumerate() {
            let s = &mut sents[i];
            let block = &mut logits[a * nb * v..(a + 1) * nb * v];
            for (k, row) in block.chunks_mut(v).enumerate() {
                log_softmax(row);
                force_eos(dec.model, row, cur_len, max_length);
                let base = s.running[k].1;
                row.iter_mut().for_each(|x| *x += base);
            }
            // The best `keep` continuations over all beams (ties: the lower index first).
            let mut order: Vec<usize> = (0..nb * v).collect();
            let cmp = |x: &usize, y: &usize| block[*y].total_cmp(&block[*x]).then(x.cmp(y));
            order.select_nth_unstable_by(keep - 1, cmp);
            order.truncate(keep);
            order.sort_by(cmp);
            let cands: Vec<(Vec<u32>, f32, bool)> = order
                .iter()
                .map(|&idx| {
                    let (beam, tok) = (idx / v, (idx % v) as u32);
                    let mut t = s.running[beam].0.clone();
                    t.push(tok);
                    let ends = tok == eos || cur_len + 1 >= max_length;
                    (t, block[idx], ends)
                })
                .collect();
            // Finished candidates among the top `nb` join the finished slots if they beat them.
            let full = s.finished.iter().all(|f| f.2) && opts.early_stopping == EarlyStopping::Yes;
            let norm = (cur_len as f64).powf(lp) as f32;
            let mut merged: Vec<(Vec<u32>, f32, bool)> = std::mem::take(&mut s.finished);
            for (r, (t, score, ends)) in cands.iter().enumerate() {
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
            let mut running: Vec<(Vec<u32>, f32)> = cands
                .into_iter()
                .map(|(t, sc, ends)| (t, if ends { sc + MASKED } else { sc }))
                .collect();
            stable_top(&mut running, nb, |r| r.1);
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
    fn log_softmax_sums_to_one() {
        let mut r = [1.0f32, 2.0, 3.0];
        log_softmax(&mut r);
        let s: f32 = r.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
