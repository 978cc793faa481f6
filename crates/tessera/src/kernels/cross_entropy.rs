//! Fused softmax + cross-entropy: one pass forward, one pass backward, no (N, V) temporaries
//! besides the gradient itself.

use super::{fast_exp, float_dispatch, new_rows, par_rows, slice, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

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

/// [`row_lse`] built for AVX-512.
///
/// # Safety
/// The CPU must support the enabled features (see [`super::avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn row_lse_avx512<T: Float>(row: &[T]) -> T {
    row_lse(row)
}

/// row = exp(row − lse) · scale, in place.
#[inline(always)]
fn softmax_in_place<F: Float>(row: &mut [F], lse: F, scale: F) {
    for x in row.iter_mut() {
        *x = (*x - lse).vexp() * scale;
    }
}

/// [`softmax_in_place`] built for AVX-512.
///
/// # Safety
/// The CPU must support the enabled features (see [`super::avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn softmax_in_place_avx512<F: Float>(row: &mut [F], lse: F, scale: F) {
    softmax_in_place(row, lse, scale)
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
    let lse = row_lses(x, n, v);
    let total = (0..n)
        .map(|i| lse[i] - x[i * v + (t[i] as usize).min(v - 1)])
        .sum::<F>();
    let mean = total / F::from_f64(n.max(1) as f64);
    let lse = lse.iter().map(|l| WithDType::to_f64(*l)).collect();
    (F::to_cpu_storage_owned(vec![mean]), lse)
}

/// Each row's logsumexp, rows in parallel when the work is large.
fn row_lses<F: Float>(x: &[F], n: usize, v: usize) -> Vec<F> {
    use rayon::prelude::*;
    let mut lse = vec![F::zero(); n];
    let f = |(i, l): (usize, &mut F)| {
        let row = &x[i * v..(i + 1) * v];
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            *l = unsafe { row_lse_avx512(row) };
            return;
        }
        *l = row_lse(row);
    };
    if n * v >= 1 << 15 && n > 1 {
        lse.par_iter_mut()
            .enumerate()
            .with_min_len((4096 / v.max(1)).max(1))
            .for_each(f);
    } else {
        lse.iter_mut().enumerate().for_each(f);
    }
    lse
}

fn ce_backward<F: Float>(
    x: &[F],
    t: &[u32],
    (n, v): (usize, usize),
    scale: f64,
    lse: Option<&[f64]>,
) -> CpuStorage {
    let scale = F::from_f64(scale);
    let dx = new_rows(n * v, v, |i, out| {
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

/// The logits and row logsumexps the fused head + cross-entropy keeps for its backward pass
/// (`(Vec<F>, Vec<F>)`, the float type erased).
type Kept = std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>;

/// Mean cross-entropy of the logits `h Wᵀ` (an LM head: h (N, C), W (V, C)) against targets (N),
/// as one op. Forward: the product, each row's logsumexp, the mean loss; the (N, V) logits stay in
/// the op. Backward: the logits turn into `(softmax − onehot) · scale` in place, then
/// `dh = G W` and `dW = Gᵀ h` (no (N, V) gradient goes through the engine).
/// With label smoothing ε the target distribution is `(1 − ε)·onehot + ε/V`: each row's loss is
/// `lse − (1 − ε)·z_t − ε·mean(z)` and its gradient `softmax − (1 − ε)·onehot − ε/V`.
#[derive(Default)]
struct LinearCrossEntropy {
    kept: Kept,
    smoothing: f64,
}

/// Backward of [`LinearCrossEntropy`]: inputs (h, W, targets); output `[dh | dW]` flat.
struct LinearCrossEntropyGrad {
    scale: f64,
    smoothing: f64,
    /// Whether dW is wanted (output `[dh | dW]`), or dh alone.
    weight_grad: bool,
    kept: Kept,
}

/// (N, C, V) of a head + cross-entropy; h may have any leading dimensions.
fn head_dims(h: &Layout, w: &Layout, t: &Layout) -> Result<(usize, usize, usize)> {
    let (v, c) = w.shape().dims2()?;
    let hc = h.shape().dims().last().copied().unwrap_or(0);
    if hc != c || c == 0 {
        candle_core::bail!(
            "linear cross-entropy: hidden {:?} does not match the head {:?}",
            h.shape(),
            w.shape()
        );
    }
    let n = h.shape().elem_count() / c;
    if t.shape().elem_count() != n || t.shape().rank() != 1 {
        candle_core::bail!("linear cross-entropy: targets {:?} for {n} rows", t.shape());
    }
    if v == 0 {
        candle_core::bail!("linear cross-entropy: no classes");
    }
    Ok((n, c, v))
}

/// logits (N, V) = h (N, C) · Wᵀ, and each row's logsumexp.
fn head_logits<F: Float>(h: &[F], w: &[F], (n, c, v): (usize, usize, usize)) -> (Vec<F>, Vec<F>) {
    use super::matmul::{filled, gemm, View};
    // SAFETY: h holds n·c elements, w v·c, the product writes all n·v of the output.
    let logits = unsafe {
        filled(n * v, |y: *mut F| {
            gemm(
                (n, v, c),
                y,
                v,
                false,
                View::rows(h, 0, c),
                View::cols(w, 0, c),
                true,
            )
        })
    };
    let lse = row_lses(&logits, n, v);
    (logits, lse)
}

impl CustomOp3 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, v) = head_dims(l1, l2, l3)?;
        let t = targets(s3, l3)?;
        if let Some(bad) = t.iter().find(|&&k| k as usize >= v) {
            candle_core::bail!("cross_entropy: target {bad} out of range for {v} classes");
        }
        float_dispatch!(s1, self.name(), |F| {
            let (logits, lse) = head_logits::<F>(slice(s1, l1)?, slice(s2, l2)?, (n, c, v));
            let eps = self.smoothing;
            let total = (0..n)
                .map(|i| {
                    let row = &logits[i * v..(i + 1) * v];
                    let mut l = lse[i] - F::from_f64(1.0 - eps) * row[t[i] as usize];
                    if eps != 0.0 {
                        let sum: f64 = row.iter().map(|&z| WithDType::to_f64(z)).sum();
                        l -= F::from_f64(eps * sum / v as f64);
                    }
                    l
                })
                .sum::<F>();
            let mean = total / F::from_f64(n.max(1) as f64);
            if let Ok(mut keep) = self.kept.lock() {
                *keep = Some(Box::new((logits, lse)));
            }
            Ok((F::to_cpu_storage_owned(vec![mean]), Shape::from(())))
        })
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let n = t.elem_count();
        // The first backward pass takes the kept logits; a later one recomputes them.
        let kept = self.kept.lock().ok().and_then(|mut k| k.take());
        // A frozen head (LoRA fine-tuning) needs no dW: half the backward products.
        let weight_grad = w.track_op();
        let all = h.apply_op3_no_bwd(
            w,
            t,
            &LinearCrossEntropyGrad {
                scale: g / n.max(1) as f64,
                smoothing: self.smoothing,
                weight_grad,
                kept: std::sync::Mutex::new(kept),
            },
        )?; // [dh | dW]
        let (nh, nw) = (h.elem_count(), w.elem_count());
        let dh = all.narrow(0, 0, nh)?.reshape(h.shape())?;
        if !weight_grad {
            return Ok((Some(dh), None, None));
        }
        let dw = all.narrow(0, nh, nw)?.reshape(w.shape())?;
        Ok((Some(dh), Some(dw), None))
    }
}

impl CustomOp3 for LinearCrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-linear-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use super::matmul::{filled, gemm, View};
        let (n, c, v) = head_dims(l1, l2, l3)?;
        let t = targets(s3, l3)?;
        float_dispatch!(s1, self.name(), |F| {
            let (h, w) = (slice::<F>(s1, l1)?, slice::<F>(s2, l2)?);
            let kept = self
                .kept
                .lock()
                .ok()
                .and_then(|mut k| k.take())
                .and_then(|k| k.downcast::<(Vec<F>, Vec<F>)>().ok())
                .filter(|k| k.0.len() == n * v && k.1.len() == n);
            let (mut g, lse) = match kept {
                Some(k) => *k,
                None => head_logits::<F>(h, w, (n, c, v)),
            };
            let scale = F::from_f64(self.scale);
            let hit = F::from_f64(self.scale * (1.0 - self.smoothing));
            let spread = F::from_f64(self.scale * self.smoothing / v as f64);
            par_rows(&mut g, v, |i, row| {
                #[cfg(target_arch = "x86_64")]
                if super::avx512() {
                    // SAFETY: the CPU has the features the AVX-512 build was compiled for.
                    unsafe { softmax_in_place_avx512(row, lse[i], scale) };
                } else {
                    softmax_in_place(row, lse[i], scale);
                }
                #[cfg(not(target_arch = "x86_64"))]
                softmax_in_place(row, lse[i], scale);
                row[t[i] as usize] -= hit;
                if self.smoothing != 0.0 {
                    row.iter_mut().for_each(|x| *x -= spread);
                }
            });
            let len = n * c + if self.weight_grad { v * c } else { 0 };
            // SAFETY: dh (n × c) and dW (v × c) are disjoint parts of the buffer, each written in
            // full by its product (k = v ≥ 1 and k = n ≥ 1).
            let all = unsafe {
                filled(len, |all: *mut F| {
                    let gv = View::rows(&g, 0, v);
                    // dh (n × c) = G (n × v) · W (v × c)
                    gemm((n, c, v), all, c, false, gv, View::rows(w, 0, c), true);
                    if !self.weight_grad {
                        return;
                    }
                    // dW (v × c) = Gᵀ (v × n) · h (n × c)
                    let gt = View::cols(&g, 0, v);
                    gemm(
                        (v, c, n),
                        all.add(n * c),
                        c,
                        false,
                        gt,
                        View::rows(h, 0, c),
                        true,
                    );
                })
            };
            Ok((F::to_cpu_storage_owned(all), Shape::from(len)))
        })
    }
}

/// Mean cross-entropy of the logits `h Wᵀ` against `targets`: h (..., C), W (V, C) (an LM head,
/// no bias), targets (N) u32 with N = the rows of h; fused on the CPU (f32 / f64). Same value
/// as `cross_entropy(linear(h, W), targets)`; the (N, V) logits never become a tensor.
pub fn linear_cross_entropy(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    linear_cross_entropy_smoothed(h, w, targets, 0.0)
}

/// [`linear_cross_entropy`] with label smoothing ε (PyTorch's `label_smoothing`): the target
/// distribution is `(1 − ε)·onehot + ε/V`.
pub fn linear_cross_entropy_smoothed(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    smoothing: f64,
) -> Result<Tensor> {
    if !(0.0..1.0).contains(&smoothing) {
        candle_core::bail!("label smoothing must be in [0, 1), got {smoothing}");
    }
    let h = h.contiguous()?;
    let w = w.contiguous()?;
    let targets = targets.contiguous()?;
    h.apply_op3(
        &w,
        &targets,
        LinearCrossEntropy {
            kept: Default::default(),
            smoothing,
        },
    )
}
