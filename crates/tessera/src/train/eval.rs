//! Language-model evaluation: loss, perplexity and bits per character over a token stream.

use crate::infer::Decoder;
use crate::models::Transformer;
use crate::Result;
use candle_core::{DType, Tensor};

/// A language model that can score windows of text: the tensor [`Transformer`] (batched, as
/// training evaluates) or the inference [`Decoder`] (what `tessera eval perplexity` runs, the
/// same path as generation).
pub trait Scorer {
    /// Longest window the model takes.
    fn context(&self) -> usize;
    /// Σ −ln p(y | x) over `n` windows of `l` tokens (`x`, `y`: (n, l) row-major).
    fn window_nll(&self, x: &[u32], y: &[u32], n: usize, l: usize) -> Result<f64>;
}

impl Scorer for Transformer {
    fn context(&self) -> usize {
        self.cfg.max_position_embeddings
    }
    fn window_nll(&self, x: &[u32], y: &[u32], n: usize, l: usize) -> Result<f64> {
        let device = self.device().clone();
        let x = Tensor::from_vec(x.to_vec(), (n, l), &device)?;
        let y = Tensor::from_vec(y.to_vec(), (n, l), &device)?;
        let loss = self
            .loss(&x, &y, None)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        Ok(loss * (n * l) as f64)
    }
}

impl Scorer for Decoder {
    fn context(&self) -> usize {
        self.cfg.max_position_embeddings
    }
    fn window_nll(&self, x: &[u32], y: &[u32], n: usize, l: usize) -> Result<f64> {
        let v = self.cfg.vocab_size;
        let mut st = self.new_state(l)?;
        let mut total = 0.0;
        for w in 0..n {
            st.clear();
            let logits = self.forward_all(&mut st, &x[w * l..(w + 1) * l])?;
            for (row, &t) in logits.chunks_exact(v).zip(&y[w * l..(w + 1) * l]) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
                total += lse - row[t as usize] as f64;
            }
        }
        Ok(total)
    }
}

/// Evaluation totals over a text.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LmEval {
    /// Summed negative log-likelihood, nats.
    pub total_nats: f64,
    /// Tokens predicted.
    pub tokens: usize,
    /// Characters those tokens cover.
    pub chars: usize,
    /// Mean nats per token.
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Nats per character.
    pub nats_per_char: f64,
    /// Bits per character.
    pub bits_per_char: f64,
}

impl LmEval {
    /// Derive the ratios from totals.
    pub fn from_totals(total_nats: f64, tokens: usize, chars: usize) -> Self {
        let loss = total_nats / tokens.max(1) as f64;
        let npc = total_nats / chars.max(1) as f64;
        LmEval {
            total_nats,
            tokens,
            chars,
            loss,
            perplexity: loss.exp(),
            nats_per_char: npc,
            bits_per_char: npc / std::f64::consts::LN_2,
        }
    }
}

/// Score `tokens` (its first token is context only; every later token is predicted once) in
/// non-overlapping windows of `block` predictions, `batch` windows at a time. `max_windows` = 0
/// scores all. `chars` is the character count of the text of `tokens[1..]`.
pub fn evaluate_tokens(
    model: &dyn Scorer,
    tokens: &[u32],
    chars: usize,
    block: usize,
    batch: usize,
    max_windows: usize,
) -> Result<LmEval> {
    if tokens.len() < 2 {
        return Err(crate::Error::Input(
            "need at least one token to score".into(),
        ));
    }
    let block = block.min(model.context());
    let mut starts: Vec<(usize, usize)> = Vec::new(); // (start, length of predictions)
    let mut s = 0;
    while s + 1 < tokens.len() {
        let len = block.min(tokens.len() - 1 - s);
        starts.push((s, len));
        s += len;
    }
    let total_windows = starts.len();
    if max_windows > 0 && starts.len() > max_windows {
        starts.truncate(max_windows);
    }
    let predicted: usize = starts.iter().map(|w| w.1).sum();
    let mut total = 0.0f64;
    // Full-length windows batched together; the short tail alone.
    for group in starts.chunks(batch.max(1)) {
        let len = group[0].1;
        type Windows<'a> = Vec<&'a (usize, usize)>;
        let (full, tail): (Windows, Windows) = group.iter().partition(|w| w.1 == len);
        for set in [full, tail] {
            if set.is_empty() {
                continue;
            }
            let l = set[0].1;
            let x: Vec<u32> = set
                .iter()
                .flat_map(|&&(st, _)| tokens[st..st + l].iter().copied())
                .collect();
            let y: Vec<u32> = set
                .iter()
                .flat_map(|&&(st, _)| tokens[st + 1..st + l + 1].iter().copied())
                .collect();
            total += model.window_nll(&x, &y, set.len(), l)?;
        }
    }
    // Characters covered, in proportion when only part of the text was scored.
    let chars = if starts.len() == total_windows {
        chars
    } else {
        ((chars as f64) * predicted as f64 / (tokens.len() - 1) as f64).round() as usize
    };
    Ok(LmEval::from_totals(total, predicted, chars))
}
