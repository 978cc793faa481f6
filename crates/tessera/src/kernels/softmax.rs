//! Scaled, optionally causal softmax over the last dimension, with its backward pass.
//!
//! For scores x (..., T, Tk) the row of query i sees keys j <= i + (Tk - T) when causal.
//! y = softmax(scale · x) over the visible keys (0 elsewhere);  dx = scale · y ⊙ (dy - Σ dy ⊙ y).

use super::{fast_exp, float_dispatch, new_rows, slice, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

struct Softmax {
    scale: f64,
    causal: bool,
}

struct SoftmaxGrad {
    scale: f64,
}

fn softmax_fwd<F: Float>(
    x: &[F],
    t: usize,
    tk: usize,
    offset: usize,
    causal: bool,
    scale: f64,
) -> CpuStorage {
    let scale = F::from_f64(scale);
    let y = new_rows(x.len(), tk, |r, out| {
        let row = &x[r * tk..(r + 1) * tk];
        let visible = if causal { (r % t) + offset + 1 } else { tk };
        out[..visible].copy_from_slice(&row[..visible]);
        softmax_row(&mut out[..visible], scale);
    });
    F::to_cpu_storage_owned(y)
}

/// `x ← softmax(scale · x)` in place (the maximum subtracted first): the softmax every path uses.
#[inline]
pub fn softmax_row<F: Float>(x: &mut [F], scale: F) {
    let m = fast_exp::max(x) * scale;
    let inv = F::one() / fast_exp::exp_in_place(x, scale, m);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

fn softmax_bwd<F: Float>(y: &[F], dy: &[F], tk: usize, scale: f64) -> CpuStorage {
    let scale = F::from_f64(scale);
    let dx = new_rows(y.len(), tk, |r, out| {
        let yr = &y[r * tk..(r + 1) * tk];
        let dr = &dy[r * tk..(r + 1) * tk];
        let dot: F = yr.iter().zip(dr).map(|(&a, &b)| a * b).sum();
        for j in 0..tk {
            out[j] = scale * yr[j] * (dr[j] - dot);
        }
    });
    F::to_cpu_storage_owned(dx)
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-scaled-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        if dims.len() < 2 {
            candle_core::bail!("softmax needs (..., T, Tk), got {:?}", dims);
        }
        let (t, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if self.causal && tk < t {
            candle_core::bail!("causal softmax needs Tk >= T, got T={t} Tk={tk}");
        }
        let offset = tk - t.min(tk);
        let causal = self.causal;
        float_dispatch!(s, self.name(), |F| Ok((
            softmax_fwd::<F>(slice(s, l)?, t, tk, offset, causal, self.scale),
            l.shape().clone()
        )))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &SoftmaxGrad { scale: self.scale },
        )?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-scaled-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let tk = *l1.shape().dims().last().unwrap_or(&1);
        float_dispatch!(s1, self.name(), |F| Ok((
            softmax_bwd::<F>(slice(s1, l1)?, slice(s2, l2)?, tk, self.scale),
            l1.shape().clone()
        )))
    }
}

/// `softmax(scale · x)` over the last dimension, causal over the last two when `causal` (fused on the CPU).
pub fn scaled_softmax(x: &Tensor, scale: f64, causal: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax { scale, causal })
}
