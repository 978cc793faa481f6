//! Causal self-attention read straight from the fused projection, forward and backward as one op
//! each: qkv (B, T, (H + 2 Hkv) D) -> y (B, T, H D), without transposing q, k, v into
//! (B, H, T, D) copies, without the (B, H, T, T) weights as a tensor, and without a batched
//! product per (batch, head) dispatched to the thread pool.
//!
//! One work item per (batch, key/value head) runs on one thread; its products read the heads as
//! strided views of qkv. Query head h uses key/value head h / (H / Hkv) (grouped-query attention).
//! Query rows go in blocks of [`BLOCK`]: block [i0, i1) only needs keys [0, i1).
//!
//! Per head, with S = q kᵀ, P = causal softmax(scale · S):
//!   forward:  y = P v
//!   backward (P recomputed): dP = dy vᵀ,  dS = scale · P ⊙ (dP - rowsum(dP ⊙ P)),
//!             dq = dS k,  dk = dSᵀ q,  dv = Pᵀ dy
//! With rotary positions (Llama), q and k are rotated right after the projection (the kept qkv is
//! the rotated one) and the gradients of the rotated q and k are rotated back before the
//! projection's backward: the rotation is orthogonal, so its backward is the rotation by −θ.
//! The reference is the composition of engine ops in `nn::Attention::forward_reference`.

use super::matmul::{gemm, SendPtr, View};
use super::segment::{Backward, Grads};
use super::{fast_exp, float_dispatch, slice, Float};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};

/// Query rows per block.
const BLOCK: usize = 32;

#[derive(Clone, Copy, Debug)]
struct Heads {
    /// Query heads.
    h: usize,
    /// Key/value heads.
    hkv: usize,
    /// Head width.
    d: usize,
}

impl Heads {
    /// Width of a qkv row.
    fn width(&self) -> usize {
        (self.h + 2 * self.hkv) * self.d
    }

    /// (B, T) of a qkv layout, checked.
    fn check(&self, l: &Layout) -> Result<(usize, usize)> {
        let (b, t, w) = l.shape().dims3()?;
        if w != self.width() || self.hkv == 0 || self.h / self.hkv * self.hkv != self.h {
            candle_core::bail!(
                "causal attention: qkv width {w} does not match {} query / {} key-value heads of {}",
                self.h,
                self.hkv,
                self.d
            );
        }
        Ok((b, t))
    }
}

/// P = causal softmax(scale · q kᵀ) of one head, rows [i0, i1) into `p` (row stride T; keys
/// [0, i1) written, those after the query's own position as 0; the rest of the rows untouched).
#[allow(clippy::too_many_arguments)]
fn probs_block<F: Float>(
    qkv: &[F],
    q_off: usize,
    k_off: usize,
    w: usize,
    d: usize,
    (i0, i1): (usize, usize),
    scale: F,
    p: &mut [F],
    t: usize,
) {
    // SAFETY: q rows i0..i1 and k rows 0..i1 lie inside qkv; p holds T·T elements.
    unsafe {
        gemm(
            (i1 - i0, i1, d),
            p[i0 * t..].as_mut_ptr(),
            t,
            false,
            View::rows(qkv, q_off + i0 * w, w),
            View::cols(qkv, k_off, w),
            false,
        )
    };
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        // SAFETY: the CPU has the features the AVX-512 build was compiled for.
        unsafe { softmax_rows_avx512(p, t, (i0, i1), scale) };
        return;
    }
    softmax_rows(p, t, (i0, i1), scale);
}

/// [`softmax_rows`] built for AVX-512 (bit-identical results, see [`super::avx512`]).
///
/// # Safety
/// The CPU must support the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn softmax_rows_avx512<F: Float>(p: &mut [F], t: usize, rows: (usize, usize), scale: F) {
    softmax_rows(p, t, rows, scale)
}

/// Causal softmax of rows [i0, i1) of `p` in place (row i over its first i + 1 entries; the
/// rest of the row up to i1 set to 0).
#[inline(always)]
fn softmax_rows<F: Float>(p: &mut [F], t: usize, (i0, i1): (usize, usize), scale: F) {
    for i in i0..i1 {
        let row = &mut p[i * t..i * t + i + 1];
        let m = fast_exp::max(row) * scale;
        let inv = F::one() / fast_exp::exp_in_place(row, scale, m);
        for x in row.iter_mut() {
            *x *= inv;
        }
        p[i * t + i + 1..i * t + i1].fill(F::zero());
    }
}

fn forward<F: Float>(qkv: &[F], (b, t): (usize, usize), hd: Heads, scale: f64) -> Vec<F> {
    use rayon::prelude::*;
    let Heads { h, hkv, d } = hd;
    let (w, c) = (hd.width(), h * d);
    let rep = h / hkv;
    let scale = F::from_f64(scale);
    // Written in full below: every (batch, head) item writes all rows of its head's columns.
    let mut y: Vec<F> = Vec::with_capacity(b * t * c);
    let yp = SendPtr(y.as_mut_ptr());
    let work = |item: usize| {
        let (bi, g) = (item / hkv, item % hkv);
        let base = bi * t * w;
        let (k_off, v_off) = (base + (h + g) * d, base + (h + hkv + g) * d);
        let mut p = vec![F::zero(); t * t];
        for r in 0..rep {
            let hi = g * rep + r;
            let q_off = base + hi * d;
            for i0 in (0..t).step_by(BLOCK) {
                let i1 = (i0 + BLOCK).min(t);
                probs_block(qkv, q_off, k_off, w, d, (i0, i1), scale, &mut p, t);
                // y rows [i0, i1) of head hi = P[i0..i1, 0..i1] · v[0..i1]
                // SAFETY: this item alone writes columns [hi·D, (hi+1)·D) of batch bi's rows.
                unsafe {
                    gemm(
                        (i1 - i0, d, i1),
                        { yp }.0.add(bi * t * c + i0 * c + hi * d),
                        c,
                        false,
                        View::rows(&p, i0 * t, t),
                        View::rows(qkv, v_off, w),
                        false,
                    )
                };
            }
        }
    };
    let items = b * hkv;
    if items > 1 && b * h * t * t * d >= 1 << 15 {
        (0..items).into_par_iter().for_each(work);
    } else {
        (0..items).for_each(work);
    }
    // SAFETY: all b·t·c elements were written (see above).
    unsafe { y.set_len(b * t * c) };
    y
}

fn backward<F: Float>(
    qkv: &[F],
    dy: &[F],
    (b, t): (usize, usize),
    hd: Heads,
    scale: f64,
) -> Vec<F> {
    use rayon::prelude::*;
    let Heads { h, hkv, d } = hd;
    let (w, c) = (hd.width(), h * d);
    let rep = h / hkv;
    let scale = F::from_f64(scale);
    // Written in full below: dq by every query block, dk and dv by every key block of the first
    // query head of each group (the group's other heads add onto them).
    let mut dqkv: Vec<F> = Vec::with_capacity(b * t * w);
    let gp = SendPtr(dqkv.as_mut_ptr());
    let work = |item: usize| {
        let (bi, g) = (item / hkv, item % hkv);
        let base = bi * t * w;
        let (k_off, v_off) = (base + (h + g) * d, base + (h + hkv + g) * d);
        let dy_base = bi * t * c;
        let mut p = vec![F::zero(); t * t];
        let mut ds = vec![F::zero(); t * t];
        let g0 = { gp }.0;
        for r in 0..rep {
            let hi = g * rep + r;
            let q_off = base + hi * d;
            let dy_off = dy_base + hi * d;
            for i0 in (0..t).step_by(BLOCK) {
                let i1 = (i0 + BLOCK).min(t);
                probs_block(qkv, q_off, k_off, w, d, (i0, i1), scale, &mut p, t);
                // dP rows [i0, i1) = dy[i0..i1] · v[0..i1]ᵀ
                // SAFETY: dy rows i0..i1 and v rows 0..i1 are in bounds; ds holds T·T.
                unsafe {
                    gemm(
                        (i1 - i0, i1, d),
                        ds[i0 * t..].as_mut_ptr(),
                        t,
                        false,
                        View::rows(dy, dy_off + i0 * c, c),
                        View::cols(qkv, v_off, w),
                        false,
                    )
                };
                for i in i0..i1 {
                    let pr = &p[i * t..i * t + i + 1];
                    let dr = &mut ds[i * t..(i + 1) * t];
                    let dot: F = pr.iter().zip(dr.iter()).map(|(&a, &b)| a * b).sum();
                    for (x, &pv) in dr.iter_mut().zip(pr) {
                        *x = scale * pv * (*x - dot);
                    }
                    for x in dr[i + 1..].iter_mut() {
                        *x = F::zero();
                    }
                }
                // dq rows [i0, i1) = dS[i0..i1, 0..i1] · k[0..i1]
                // SAFETY: this item alone writes head hi's q columns and group g's k, v columns
                // of batch bi (all other items have another batch or group).
                unsafe {
                    gemm(
                        (i1 - i0, d, i1),
                        g0.add(q_off + i0 * w),
                        w,
                        false,
                        View::rows(&ds, i0 * t, t),
                        View::rows(qkv, k_off, w),
                        false,
                    )
                };
            }
            // Keys [j0, j1) are seen by queries [j0, T): dk += dS[j0.., j0..j1]ᵀ q[j0..],
            // dv += P[j0.., j0..j1]ᵀ dy[j0..]. Entries above the diagonal of P and dS are zero
            // (both set so above).
            for j0 in (0..t).step_by(BLOCK) {
                let j1 = (j0 + BLOCK).min(t);
                let dims = (j1 - j0, d, t - j0);
                // SAFETY: as above.
                unsafe {
                    gemm(
                        dims,
                        g0.add(k_off + j0 * w),
                        w,
                        r > 0,
                        View::cols(&ds, j0 * t + j0, t),
                        View::rows(qkv, q_off + j0 * w, w),
                        false,
                    );
                    gemm(
                        dims,
                        g0.add(v_off + j0 * w),
                        w,
                        r > 0,
                        View::cols(&p, j0 * t + j0, t),
                        View::rows(dy, dy_off + j0 * c, c),
                        false,
                    );
                }
            }
        }
    };
    let items = b * hkv;
    if items > 1 && b * h * t * t * d >= 1 << 15 {
        (0..items).into_par_iter().for_each(work);
    } else {
        (0..items).for_each(work);
    }
    // SAFETY: all b·t·w elements were written (see above).
    unsafe { dqkv.set_len(b * t * w) };
    dqkv
}

struct CausalAttention {
    heads: Heads,
    scale: f64,
    /// Rotary base θ, when q and k are rotated (inside the op, on a copy of qkv).
    rope: Option<f64>,
}

/// qkv with q and k rotated at positions `0..T` when `rope` is set (a copy; borrowed otherwise).
fn rotated<'a, F: Float>(
    qkv: &'a [F],
    t: usize,
    hd: Heads,
    rope: Option<f64>,
) -> std::borrow::Cow<'a, [F]> {
    match rope {
        None => std::borrow::Cow::Borrowed(qkv),
        Some(theta) => {
            let mut r = qkv.to_vec();
            let (cos, sin) = rope_tables::<F>(t, hd.d, theta);
            rotate_qk(&mut r, t, hd, (&cos, &sin), false);
            std::borrow::Cow::Owned(r)
        }
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t) = self.heads.check(l)?;
        let c = self.heads.h * self.heads.d;
        float_dispatch!(s, "fused-causal-attention", |F| {
            let qkv = rotated::<F>(slice(s, l)?, t, self.heads, self.rope);
            Ok((
                F::to_cpu_storage_owned(forward::<F>(&qkv, (b, t), self.heads, self.scale)),
                Shape::from((b, t, c)),
            ))
        })
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let grad = CausalAttentionGrad {
            heads: self.heads,
            scale: self.scale,
            rope: self.rope,
        };
        Ok(Some(qkv.apply_op2_no_bwd(&dy.contiguous()?, &grad)?))
    }
}

struct CausalAttentionGrad {
    heads: Heads,
    scale: f64,
    rope: Option<f64>,
}

impl CustomOp2 for CausalAttentionGrad {
    fn name(&self) -> &'static str {
        "fused-causal-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t) = self.heads.check(l1)?;
        if l2.shape().dims() != [b, t, self.heads.h * self.heads.d] {
            candle_core::bail!("causal attention grad: output gradient has the wrong shape");
        }
        float_dispatch!(s1, "fused-causal-attention-grad", |F| {
            let qkv = rotated::<F>(slice(s1, l1)?, t, self.heads, self.rope);
            let mut dqkv = backward::<F>(&qkv, slice(s2, l2)?, (b, t), self.heads, self.scale);
            if let Some(theta) = self.rope {
                let (cos, sin) = rope_tables::<F>(t, self.heads.d, theta);
                rotate_qk(&mut dqkv, t, self.heads, (&cos, &sin), true);
            }
            Ok((F::to_cpu_storage_owned(dqkv), l1.shape().clone()))
        })
    }
}

/// Causal self-attention from the fused projection qkv (B, T, (H + 2 Hkv) D), laid out
/// `[q heads | k heads | v heads]` along the last dimension -> (B, T, H D), heads side by side.
/// Fused on the CPU (f32 / f64); the scale is 1/√D.
pub fn causal_attention(
    qkv: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    causal_attention_rope(qkv, heads, kv_heads, head_dim, None)
}

/// [`causal_attention`] with q and k rotated first when `rope` (the base θ) is given (positions
/// `0..T`, Hugging Face's half-split layout), inside the op.
pub fn causal_attention_rope(
    qkv: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope: Option<f64>,
) -> Result<Tensor> {
    let op = CausalAttention {
        heads: Heads {
            h: heads,
            hkv: kv_heads,
            d: head_dim,
        },
        scale: 1.0 / (head_dim as f64).sqrt(),
        rope,
    };
    qkv.contiguous()?.apply_op1(op)
}

/// Rotary tables (T, D/2) as the tensor path builds them (angles in f32, then converted).
fn rope_tables<F: Float>(t: usize, d: usize, theta: f64) -> (Vec<F>, Vec<F>) {
    let freqs = super::rotary::inv_freqs(d, theta);
    let (mut cos, mut sin) = (Vec::with_capacity(t * d / 2), Vec::with_capacity(t * d / 2));
    for p in 0..t {
        for &f in &freqs {
            let a = p as f32 * f;
            cos.push(F::from_f64(a.cos() as f64));
            sin.push(F::from_f64(a.sin() as f64));
        }
    }
    (cos, sin)
}

/// Rotate the q and k heads of every qkv row (row `r` at position `r mod T`) in place, by +θ or,
/// for gradients (`back`), by −θ. Half-split pairs (i, i + D/2), as `kernels::rotary`.
fn rotate_qk<F: Float>(qkv: &mut [F], t: usize, hd: Heads, (cos, sin): (&[F], &[F]), back: bool) {
    let (w, d) = (hd.width(), hd.d);
    let half = d / 2;
    super::par_rows(qkv, w, |r, row| {
        let pos = r % t;
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        for head in row[..(hd.h + hd.hkv) * d].chunks_exact_mut(d) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1, si) = (a[i], b[i], if back { -s[i] } else { s[i] });
                a[i] = x0 * c[i] - x1 * si;
                b[i] = x1 * c[i] + x0 * si;
            }
        }
    });
}

/// The projection qkv = x M (+ b) and the causal attention on it as one op: x (B, T, C) ->
/// (B, T, H D). The forward keeps qkv for the backward, which forms dqkv with the attention
/// backward and then `[dx | dW | db]` with the linear backward (qkv and its gradient never go
/// through the engine). Weight layouts as in [`super::linear::linear`].
struct ProjectedAttention {
    heads: Heads,
    scale: f64,
    transposed: bool,
    /// Rotary base θ, when q and k are rotated.
    rope: Option<f64>,
    /// qkv from the forward pass (`Vec<F>`, the float type erased).
    qkv: std::sync::Mutex<Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>>,
}

/// Backward of [`ProjectedAttention`]: inputs (x, W, dy); output `[dx | dW | db]` flat.
struct ProjectedAttentionGrad {
    heads: Heads,
    scale: f64,
    transposed: bool,
    rope: Option<f64>,
    bias: bool,
    qkv: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl ProjectedAttention {
    /// (B, T) and the linear's dimensions, checked against the heads.
    fn dims(&self, lx: &Layout, lw: &Layout) -> Result<((usize, usize), super::linear::Dims)> {
        let (b, t, _) = lx.shape().dims3()?;
        let d = super::linear::Dims::of(lx, lw, self.transposed)?;
        if d.out != self.heads.width() {
            candle_core::bail!(
                "projected attention: projection width {} for {} query / {} key-value heads of {}",
                d.out,
                self.heads.h,
                self.heads.hkv,
                self.heads.d
            );
        }
        if self.heads.hkv == 0 || !self.heads.h.is_multiple_of(self.heads.hkv) {
            candle_core::bail!("projected attention: query heads must be a multiple of kv heads");
        }
        Ok(((b, t), d))
    }

    fn fwd<F: Float>(
        &self,
        x: &[F],
        w: &[F],
        bias: Option<&[F]>,
        bt: (usize, usize),
        d: super::linear::Dims,
    ) -> CpuStorage {
        let mut qkv = super::linear::forward_vec(x, w, bias, d);
        if let Some(theta) = self.rope {
            let (cos, sin) = rope_tables::<F>(bt.1, self.heads.d, theta);
            rotate_qk(&mut qkv, bt.1, self.heads, (&cos, &sin), false);
        }
        let y = forward::<F>(&qkv, bt, self.heads, self.scale);
        if let Ok(mut keep) = self.qkv.lock() {
            *keep = Some(std::sync::Arc::new(qkv));
        }
        F::to_cpu_storage_owned(y)
    }

    fn out_shape(&self, (b, t): (usize, usize)) -> Shape {
        Shape::from((b, t, self.heads.h * self.heads.d))
    }
}

impl Backward for ProjectedAttention {
    fn grads(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, dy: &Tensor) -> Result<Grads> {
        let qkv = match self.qkv.lock().ok().and_then(|q| q.clone()) {
            Some(q) => q,
            None => candle_core::bail!("projected attention: backward without a forward"),
        };
        let grad = ProjectedAttentionGrad {
            heads: self.heads,
            scale: self.scale,
            transposed: self.transposed,
            rope: self.rope,
            bias: b.is_some(),
            qkv,
        };
        let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &grad)?;
        super::linear::split_grads(&all, x, w, b)
    }
}

impl CustomOp2 for ProjectedAttention {
    fn name(&self) -> &'static str {
        "fused-projected-causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (bt, d) = self.dims(l1, l2)?;
        float_dispatch!(s1, "fused-projected-causal-attention", |F| Ok((
            self.fwd::<F>(slice(s1, l1)?, slice(s2, l2)?, None, bt, d),
            self.out_shape(bt)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for ProjectedAttention {
    fn name(&self) -> &'static str {
        "fused-projected-causal-attention"
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
        let (bt, d) = self.dims(l1, l2)?;
        if l3.shape().elem_count() != d.out {
            candle_core::bail!("projected attention: bias does not match the projection");
        }
        float_dispatch!(s1, "fused-projected-causal-attention", |F| Ok((
            self.fwd::<F>(slice(s1, l1)?, slice(s2, l2)?, Some(slice(s3, l3)?), bt, d),
            self.out_shape(bt)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, Some(b), dy)?;
        Ok((Some(dx), Some(dw), db))
    }
}

impl CustomOp3 for ProjectedAttentionGrad {
    fn name(&self) -> &'static str {
        "fused-projected-causal-attention-grad"
    }

    /// Output: `[dx (N·C) | dW | db (with a bias)]` as one flat vector.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, _) = l1.shape().dims3()?;
        let d = super::linear::Dims::of(l1, l2, self.transposed)?;
        if l3.shape().dims() != [b, t, self.heads.h * self.heads.d] {
            candle_core::bail!("projected attention grad: output gradient has the wrong shape");
        }
        let bias = self.bias;
        float_dispatch!(s1, self.name(), |F| {
            let qkv = self
                .qkv
                .downcast_ref::<Vec<F>>()
                .filter(|q| q.len() == b * t * self.heads.width())
                .ok_or_else(|| {
                    candle_core::Error::Msg("projected attention: saved qkv mismatch".into())
                })?;
            let mut dqkv = backward::<F>(qkv, slice(s3, l3)?, (b, t), self.heads, self.scale);
            if let Some(theta) = self.rope {
                let (cos, sin) = rope_tables::<F>(t, self.heads.d, theta);
                rotate_qk(&mut dqkv, t, self.heads, (&cos, &sin), true);
            }
            Ok(super::linear::backward::<F>(
                slice(s1, l1)?,
                slice(s2, l2)?,
                &dqkv,
                d,
                bias,
            ))
        })
    }
}

/// `causal_attention(x M + b)` for x (B, T, C) as one op (fused on the CPU, f32 / f64): the
/// projection to qkv (B, T, (H + 2 Hkv) D) and the attention, without qkv or its gradient as a
/// tensor. The weight is (out, in) (`M = Wᵀ`), or (in, out) when `transposed`. With `rope`
/// (the base θ), q and k are rotated at positions `0..T` (Hugging Face's half-split layout).
#[allow(clippy::too_many_arguments)]
pub fn projected_causal_attention(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    transposed: bool,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope: Option<f64>,
) -> Result<Tensor> {
    if rope.is_some() && !head_dim.is_multiple_of(2) {
        candle_core::bail!("rotary positions need an even head size, got {head_dim}");
    }
    let op = ProjectedAttention {
        heads: Heads {
            h: heads,
            hkv: kv_heads,
            d: head_dim,
        },
        scale: 1.0 / (head_dim as f64).sqrt(),
        transposed,
        rope,
        qkv: std::sync::Mutex::new(None),
    };
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => super::segment::apply3(op, &x, &w, &b.contiguous()?),
        None => super::segment::apply2(op, &x, &w),
    }
}
