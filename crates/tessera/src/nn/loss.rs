//! Cross-entropy over logits, differentiable.

use candle_core::{Result, Tensor, D};

/// Mean cross-entropy of `logits` (N, V) against `targets` (N) u32, in nats.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if crate::kernels::applicable(logits) {
        return crate::kernels::cross_entropy::cross_entropy(logits, targets);
    }
    cross_entropy_reference(logits, targets)
}

/// Cross-entropy from engine primitives (any device and dtype).
pub fn cross_entropy_reference(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let log_probs = log_softmax(logits)?; // (N, V)
    let picked = log_probs.gather(&targets.reshape((n, 1))?, 1)?; // (N, 1)
    picked.neg()?.mean_all()
}

/// Numerically stable log-softmax over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach(); // (..., 1): a constant shift, no gradient needed
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Numerically stable softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Label-smoothed mean cross-entropy (PyTorch's `label_smoothing`): the target distribution is
/// `(1 − ε)·onehot + ε/V`, so the loss is `(1 − ε)·CE − ε·mean_v log p_v`. ε = 0 is [`cross_entropy`].
pub fn smoothed_cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    if smoothing == 0.0 {
        return cross_entropy(logits, targets);
    }
    let n = logits.dim(0)?;
    let log_probs = log_softmax(logits)?; // (N, V)
    let nll = log_probs
        .gather(&targets.reshape((n, 1))?, 1)?
        .neg()?
        .mean_all()?;
    let uniform = log_probs.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}
