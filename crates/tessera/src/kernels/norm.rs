//! Fused LayerNorm and RMSNorm over the last dimension, with backward passes.
//!
//! Backward (per row, x̂ = normalized x, g = dy ⊙ w, r = 1/std):
//!   LayerNorm: dx = r (g - mean(g) - x̂ mean(g ⊙ x̂)),  dw = Σ_rows dy ⊙ x̂,  db = Σ_rows dy
//!   RMSNorm:   dx = r (g - x̂ mean(g ⊙ x̂)),            dw = Σ_rows dy ⊙ x̂

use super::fast_exp::{sum_by, sum_by_f64};
use super::segment::Grads;
use super::{float_dispatch, new_rows, new_rows_in, slice, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

struct LayerNorm {
    eps: f64,
}

struct NormGrad {
    eps: f64,
    rms: bool,
}

/// (mean, 1/std) of a row; mean is 0 for RMSNorm. The sums accumulate in f64 (each term in
/// the row's type, as ggml's norms do): an f32 sum over a wide row loses bits that 30 layers of
/// a quantized model amplify into visible logit differences from llama.cpp.
#[inline(always)]
fn stats<T: Float>(row: &[T], eps: T, rms: bool) -> (T, T) {
    let c = row.len();
    let n = c as f64;
    let mean = if rms {
        T::zero()
    } else {
        T::from_f64(sum_by_f64(c, |j| row[j]) / n)
    };
    let var = T::from_f64(sum_by_f64(c, |j| (row[j] - mean) * (row[j] - mean)) / n);
    (mean, T::one() / (var + eps).sqrt())
}

fn width(l: &Layout) -> Result<usize> {
    l.shape()
        .dims()
        .last()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("norm of a scalar".into()))
}

fn forward<F: Float>(
    x: &[F],
    w: &[F],
    b: Option<&[F]>,
    c: usize,
    eps: f64,
    rms: bool,
) -> CpuStorage {
    let eps = F::from_f64(eps);
    let y = new_rows(x.len(), c, |i, out| {
        normalize_row(out, &x[i * c..(i + 1) * c], w, b, eps, rms)
    });
    F::to_cpu_storage_owned(y)
}

/// One normalized row, the kernel every path uses (training ops, inference on slices):
/// `out = (row − mean) / sqrt(var + eps) · w (+ b)` for LayerNorm, `row / sqrt(mean(row²) + eps)
/// · w` for RMSNorm (`rms`). Sums in eight partial sums of `F`; the AVX-512 build where the CPU
/// has it (bit-identical results).
#[inline]
pub fn normalize_row<F: Float>(
    out: &mut [F],
    row: &[F],
    w: &[F],
    b: Option<&[F]>,
    eps: F,
    rms: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        // SAFETY: the CPU has the features the AVX-512 build was compiled for.
        unsafe { norm_row_avx512(out, row, w, b, eps, rms) };
        return;
    }
    norm_row(out, row, w, b, eps, rms);
}

/// One normalized row: `out = (row − mean) / std · w (+ b)`.
#[inline(always)]
fn norm_row<F: Float>(out: &mut [F], row: &[F], w: &[F], b: Option<&[F]>, eps: F, rms: bool) {
    let (mean, r) = stats(row, eps, rms);
    let c = row.len();
    for j in 0..c {
        let v = (row[j] - mean) * r * w[j];
        out[j] = match b {
            Some(b) => v + b[j],
            None => v,
        };
    }
}

/// [`norm_row`] built for AVX-512 (bit-identical results, see [`super::avx512`]).
///
/// # Safety
/// The CPU must support the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn norm_row_avx512<F: Float>(
    out: &mut [F],
    row: &[F],
    w: &[F],
    b: Option<&[F]>,
    eps: F,
    rms: bool,
) {
    norm_row(out, row, w, b, eps, rms)
}

/// dx of one row, given its (mean, 1/std).
#[inline(always)]
fn grad_row<F: Float>(o: &mut [F], row: &[F], d: &[F], w: &[F], (mean, r): (F, F), rms: bool) {
    let c = row.len();
    let cf = F::from_f64(c as f64);
    let mg = if rms {
        F::zero()
    } else {
        sum_by(c, |j| d[j] * w[j]) / cf
    };
    let mgx = sum_by(c, |j| d[j] * w[j] * (row[j] - mean)) * r / cf;
    for j in 0..c {
        let xh = (row[j] - mean) * r;
        o[j] = r * (d[j] * w[j] - mg - xh * mgx);
    }
}

/// [`grad_row`] built for AVX-512.
///
/// # Safety
/// The CPU must support the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn grad_row_avx512<F: Float>(
    o: &mut [F],
    row: &[F],
    d: &[F],
    w: &[F],
    st: (F, F),
    rms: bool,
) {
    grad_row(o, row, d, w, st, rms)
}

/// dw, db over columns [j0, j0 + dw.len()): sums over all rows, in row order.
#[inline(always)]
fn grad_cols<F: Float>(
    x: &[F],
    dy: &[F],
    st: &[F],
    c: usize,
    j0: usize,
    dw: &mut [F],
    db: &mut [F],
) {
    let rows = x.len() / c;
    let k = dw.len();
    for i in 0..rows {
        let row = &x[i * c + j0..i * c + j0 + k];
        let d = &dy[i * c + j0..i * c + j0 + k];
        let (mean, r) = (st[2 * i], st[2 * i + 1]);
        for j in 0..k {
            dw[j] += d[j] * (row[j] - mean) * r;
            db[j] += d[j];
        }
    }
}

/// [`grad_cols`] built for AVX-512.
///
/// # Safety
/// The CPU must support the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn grad_cols_avx512<F: Float>(
    x: &[F],
    dy: &[F],
    st: &[F],
    c: usize,
    j0: usize,
    dw: &mut [F],
    db: &mut [F],
) {
    grad_cols(x, dy, st, c, j0, dw, db)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let c = width(l1)?;
        float_dispatch!(s1, self.name(), |F| {
            let y = forward::<F>(
                slice(s1, l1)?,
                slice(s2, l2)?,
                Some(slice(s3, l3)?),
                c,
                self.eps,
                false,
            );
            Ok((y, l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(x, w, dy, self.eps, false)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// (dx, dw, db) of a norm from one fused pass (db for LayerNorm only: RMSNorm has no bias).
fn backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    eps: f64,
    rms: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (n, c) = (x.elem_count(), w.elem_count());
    let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &NormGrad { eps, rms })?; // [dx | dw | db]
    Ok((
        all.narrow(0, 0, n)?.reshape(x.shape())?,
        all.narrow(0, n, c)?,
        if rms {
            None
        } else {
            Some(all.narrow(0, n + c, c)?)
        },
    ))
}

struct RmsNorm {
    eps: f64,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = width(l1)?;
        float_dispatch!(s1, self.name(), |F| {
            let y = forward::<F>(slice(s1, l1)?, slice(s2, l2)?, None, c, self.eps, true);
            Ok((y, l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, dy, self.eps, true)?;
        Ok((Some(dx), Some(dw)))
    }
}

fn norm_grad<F: Float>(
    x: &[F],
    w: &[F],
    dy: &[F],
    c: usize,
    eps: f64,
    rms: bool,
) -> (CpuStorage, Shape) {
    let eps = F::from_f64(eps);
    let rows = x.len() / c;
    // (mean, 1/std) of every row, shared by the two passes below.
    let mut st = vec![F::zero(); 2 * rows];
    let row_stats = |(i, o): (usize, &mut [F])| {
        let (mean, r) = stats(&x[i * c..(i + 1) * c], eps, rms);
        o[0] = mean;
        o[1] = r;
    };
    if x.len() >= 1 << 15 {
        use rayon::prelude::*;
        st.par_chunks_mut(2).enumerate().for_each(row_stats);
    } else {
        st.chunks_mut(2).enumerate().for_each(row_stats);
    }
    let mut out = new_rows_in(x.len() + 2 * c, x.len(), c, |i, o| {
        let row = &x[i * c..(i + 1) * c];
        let d = &dy[i * c..(i + 1) * c];
        let st = (st[2 * i], st[2 * i + 1]);
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            unsafe { grad_row_avx512(o, row, d, w, st, rms) };
            return;
        }
        grad_row(o, row, d, w, st, rms);
    });
    let (dw, db) = out[x.len()..].split_at_mut(c);
    // dw, db: column sums over the rows, rows in order (the same result on any number of
    // threads); blocks of columns in parallel when the work is large.
    const COLS: usize = 64;
    let cols = |j0: usize, dw: &mut [F], db: &mut [F]| {
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            unsafe { grad_cols_avx512(x, dy, &st, c, j0, dw, db) };
            return;
        }
        grad_cols(x, dy, &st, c, j0, dw, db);
    };
    if x.len() >= 1 << 16 && c > COLS {
        use rayon::prelude::*;
        dw.par_chunks_mut(COLS)
            .zip(db.par_chunks_mut(COLS))
            .enumerate()
            .for_each(|(k, (w, b))| cols(k * COLS, w, b));
    } else {
        cols(0, dw, db);
    }
    let len = out.len();
    (F::to_cpu_storage_owned(out), Shape::from(len))
}

impl CustomOp3 for NormGrad {
    fn name(&self) -> &'static str {
        "fused-norm-grad"
    }

    /// Output: `[dx (N·C) | dw (C) | db (C)]` as one flat vector.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = width(l1)?;
        let rms = self.rms;
        float_dispatch!(s1, self.name(), |F| Ok(norm_grad::<F>(
            slice(s1, l1)?,
            slice(s2, l2)?,
            slice(s3, l3)?,
            c,
            self.eps,
            rms
        )))
    }
}

/// LayerNorm over the last dimension (fused on the CPU).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    super::segment::apply3(
        LayerNorm { eps },
        &x.contiguous()?,
        &w.contiguous()?,
        &b.contiguous()?,
    )
}

/// RMSNorm over the last dimension (fused on the CPU).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    super::segment::apply2(RmsNorm { eps }, &x.contiguous()?, &w.contiguous()?)
}

impl super::segment::Backward for LayerNorm {
    fn grads(&self, x: &Tensor, w: &Tensor, _b: Option<&Tensor>, dy: &Tensor) -> Result<Grads> {
        backward(x, w, dy, self.eps, false)
    }
}

impl super::segment::Backward for RmsNorm {
    fn grads(&self, x: &Tensor, w: &Tensor, _b: Option<&Tensor>, dy: &Tensor) -> Result<Grads> {
        backward(x, w, dy, self.eps, true)
    }
}
