//! Fused softmax + cross-entropy: one pass forward, one pass backward, no (N, V) temporaries
//! besides the gradient itself.

use super::{fast_exp, float_dispatch, par_rows, slice, Float};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// Mean over rows of `logsumexp(logits[i]) - logits[i, target[i]]`. Keeps each row's logsumexp
/// from the forward pass for the backward pass (one exp per logit saved).
#[derive(Default)]
struct CrossEntropy {
    lse: std::sync::Mutex<Option<Vec<f64>>>,
}
/// Gradient: `(softmax(logits[i]) - onehot(target[i])) * scale`, with the rows' logsumexp when known.
struct CrossEntropyGrad {
    scale: f64,
    lse: Option<Vec<f64>>,
}

#[inline(always)]
fn row_lse<T: Float>(row: &[T]) -> T {
    let m = fast_exp::max(row);
    m + fast_exp::exp_sum(row, T::one(), m).ln()
}

/// out = softmax(row) · scale, given the row's logsumexp or not.
#[inline(always)]
fn softmax_row<F: Float>(out: &mut [F], row: &[F], lse: Option<F>, scale: F) {
    let lse = lse.unwrap_or_else(|| row_lse(row));
    for (o, &xv) in out.iter_mut().zip(row) {
        *o = (xv - lse).vexp() * scale;
    }
}

/// (mean loss, each row's logsumexp)
fn ce_forward<F: Float>(x: &[F], t: &[u32], n: usize, v: usize) -> (CpuStorage, Vec<f64>) {
    let mut lse = vec![F::zero(); n];
    par_rows(&mut lse, 1, |i, out| {
        out[0] = row_lse(&x[i * v..(i + 1) * v]);
    });
    let total = (0..n)
        .map(|i| lse[i] - x[i * v + (t[i] as usize).min(v - 1)])
        .sum::<F>();
    let mean = total / F::from_f64(n.max(1) as f64);
    let lse = lse.iter().map(|l| WithDType::to_f64(*l)).collect();
    (F::to_cpu_storage_owned(vec![mean]), lse)
}

fn ce_backward<F: Float>(
    x: &[F],
    t: &[u32],
    (n, v): (usize, usize),
    scale: f64,
    lse: Option<&[f64]>,
) -> CpuStorage {
    let scale = F::from_f64(scale);
    let mut dx = vec![F::zero(); n * v];
    par_rows(&mut dx, v, |i, out| {
        let row = &x[i * v..(i + 1) * v];
        let lse = lse.map(|l| F::from_f64(l[i]));
        softmax_row(out, row, lse, scale);
        let k = (t[i] as usize).min(v - 1);
        out[k] -= scale;
    });
    F::to_cpu_storage_owned(dx)
}

fn dims(l1: &Layout, l2: &Layout) -> Result<(usize, usize)> {
    let (n, v) = l1.shape().dims2()?;
    if l2.shape().dims() != [n] {
        candle_core::bail!(
            "cross_entropy: targets {:?} do not match logits {:?}",
            l2.shape(),
            l1.shape()
        );
    }
    Ok((n, v))
}

fn targets<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    slice::<u32>(s, l)
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims(l1, l2)?;
        let t = targets(s2, l2)?;
        if let Some(bad) = t.iter().find(|&&k| k as usize >= v) {
            candle_core::bail!("cross_entropy: target {bad} out of range for {v} classes");
        }
        float_dispatch!(s1, self.name(), |F| {
            let (loss, lse) = ce_forward::<F>(slice(s1, l1)?, t, n, v);
            if let Ok(mut keep) = self.lse.lock() {
                *keep = Some(lse);
            }
            Ok((loss, Shape::from(())))
        })
    }

    fn bwd(
        &self,
        logits: &Tensor,
        tgt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let n = logits.dim(0)?;
        let dx = logits.apply_op2_no_bwd(
            tgt,
            &CrossEntropyGrad {
                scale: g / n as f64,
                lse: self.lse.lock().ok().and_then(|l| l.clone()),
            },
        )?;
        Ok((Some(dx), None))
    }
}

impl CustomOp2 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims(l1, l2)?;
        let t = targets(s2, l2)?;
        float_dispatch!(s1, self.name(), |F| Ok((
            ce_backward::<F>(slice(s1, l1)?, t, (n, v), self.scale, self.lse.as_deref()),
            Shape::from((n, v))
        )))
    }
}

/// Mean cross-entropy of `logits` (N, V) against `targets` (N) u32 (fused on the CPU).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.contiguous()?;
    let targets = targets.contiguous()?;
    logits.apply_op2(&targets, CrossEntropy::default())
}
