//! Bidirectional attention with an additive key mask, fused on the CPU for short sequences:
//! one parallel work item per (batch, head) computes `softmax(scale · q kᵀ + mask) v` without
//! materializing the (B, H, T, T) weights or dispatching many tiny matrix products.
//!
//! Backward (P the weights, dY the output gradient, all per (batch, head)):
//!   dV = Pᵀ dY,  dP = dY Vᵀ,  dS = P ⊙ (dP - rowsum(dP ⊙ P)),  dQ = scale · dS K,  dK = scale · dSᵀ Q
//! computed from engine ops, so it runs on any device.

use super::matmul::{gemm, SendPtr, View};
use super::{fast_exp, float_dispatch, slice, Float};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType, D,
};
use std::sync::Arc;

struct MaskedAttention {
    scale: f64,
    /// Additive key mask (B, T) or none.
    mask: Option<Tensor>,
}

fn forward<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    mask: Option<&[F]>,
    (b, h, t, d): (usize, usize, usize, usize),
    scale: f64,
) -> Vec<F> {
    use rayon::prelude::*;
    let scale = F::from_f64(scale);
    let mut y = vec![F::zero(); b * h * t * d];
    let head = t * d;
    let work = |bh: usize, out: &mut [F]| {
        let base = bh * head;
        let (qh, kh, vh) = (
            &q[base..base + head],
            &k[base..base + head],
            &v[base..base + head],
        );
        let m = mask.map(|m| &m[(bh / h) * t..(bh / h + 1) * t]);
        let mut s = vec![F::zero(); t];
        for i in 0..t {
            let qi = &qh[i * d..(i + 1) * d];
            let mut max = F::neg_infinity();
            for j in 0..t {
                let kj = &kh[j * d..(j + 1) * d];
                let mut dot = F::zero();
                for c in 0..d {
                    dot += qi[c] * kj[c];
                }
                let x = dot * scale + m.map_or(F::zero(), |m| m[j]);
                s[j] = x;
                max = num_traits::Float::max(max, x);
            }
            let mut sum = F::zero();
            for x in s.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let inv = F::one() / sum;
            let yi = &mut out[i * d..(i + 1) * d];
            for (j, &p) in s.iter().enumerate() {
                let p = p * inv;
                let vj = &vh[j * d..(j + 1) * d];
                for c in 0..d {
                    yi[c] += p * vj[c];
                }
            }
        }
    };
    if b * h > 1 && b * h * t * t * d >= 1 << 14 {
        y.par_chunks_mut(head)
            .enumerate()
            .for_each(|(bh, out)| work(bh, out));
    } else {
        y.chunks_mut(head)
            .enumerate()
            .for_each(|(bh, out)| work(bh, out));
    }
    y
}

impl CustomOp3 for MaskedAttention {
    fn name(&self) -> &'static str {
        "fused-masked-attention"
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
        let dims = l1.shape().dims4()?;
        if l2.shape().dims() != l1.shape().dims() || l3.shape().dims() != l1.shape().dims() {
            candle_core::bail!("masked attention: q, k, v must have the same (B, H, T, D) shape");
        }
        if let Some(m) = &self.mask {
            if m.dims() != [dims.0, dims.2] {
                candle_core::bail!("masked attention: mask must be (B, T), got {:?}", m.dims());
            }
        }
        float_dispatch!(s1, self.name(), |F| {
            let mask: Option<Vec<F>> = match &self.mask {
                Some(m) => Some(m.to_dtype(F::DTYPE)?.flatten_all()?.to_vec1::<F>()?),
                None => None,
            };
            let y = forward::<F>(
                slice(s1, l1)?,
                slice(s2, l2)?,
                slice(s3, l3)?,
                mask.as_deref(),
                dims,
                self.scale,
            );
            Ok((F::to_cpu_storage_owned(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k, v, dy) = (q.detach(), k.detach(), v.detach(), dy.detach());
        let (b, _h, t, _d) = q.dims4()?;
        let s = (q.matmul(&k.t()?)? * self.scale)?; // (B, H, T, T)
        let s = match &self.mask {
            Some(m) => s.broadcast_add(&m.to_dtype(s.dtype())?.reshape((b, 1, 1, t))?)?,
            None => s,
        };
        let p = crate::kernels::softmax::scaled_softmax(&s, 1.0, false)?; // (B, H, T, T)
        let dv = p.t()?.matmul(&dy)?; // (B, H, T, D)
        let dp = dy.matmul(&v.t()?)?; // (B, H, T, T)
        let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?; // (B, H, T, 1)
        let ds = (p * dp.broadcast_sub(&dot)?)?;
        let dq = (ds.matmul(&k)? * self.scale)?;
        let dk = (ds.t()?.matmul(&q)? * self.scale)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// `softmax(scale · q kᵀ + mask) v` for q, k, v (B, H, T, D) and an additive key mask (B, T)
/// (0 = token, large negative = padding) -> (B, H, T, D), fused on the CPU (f32 / f64).
pub fn masked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let op = MaskedAttention {
        scale,
        mask: mask.map(|m| m.detach()),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

// ---------------------------------------------------------------------------------------------
// Packed (unpadded) bidirectional attention.
// ---------------------------------------------------------------------------------------------

/// Attention dropout inside the packed kernel: weight (i, j) of head h of sequence s is kept when
/// a hash of (seed, s, h, i, j) is at least `threshold` (16-bit), and then scaled by `scale`.
/// The mask is a pure function of its coordinates, so the backward pass recomputes it instead
/// of storing it, and a run is deterministic for a given seed.
#[derive(Clone, Copy, Debug)]
struct DropMask {
    seed: u64,
    threshold: u32,
    scale: f64,
}

impl DropMask {
    fn new(p: f64, seed: u64) -> Option<Self> {
        if p <= 0.0 {
            return None;
        }
        Some(DropMask {
            seed,
            threshold: ((p * 65536.0).round() as u32).min(65536),
            scale: 1.0 / (1.0 - p),
        })
    }

    /// Multiply row i of head (s, h) (`row[j]` for key j) by the mask, in place.
    #[inline]
    fn apply<F: Float>(&self, row: &mut [F], s: usize, h: usize, i: usize) {
        let scale = F::from_f64(self.scale);
        let base = self
            .seed
            .wrapping_add((s as u64) << 40 ^ (h as u64) << 32 ^ (i as u64) << 16);
        for (q, chunk) in row.chunks_mut(4).enumerate() {
            let mut z = base.wrapping_add((q as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for (k, x) in chunk.iter_mut().enumerate() {
                let u = ((z >> (16 * k)) & 0xFFFF) as u32;
                *x = if u >= self.threshold {
                    *x * scale
                } else {
                    F::zero()
                };
            }
        }
    }
}

/// Geometry of a packed batch: sequence i is rows `offsets[i]..offsets[i + 1]` of qkv (N, 3 H D).
#[derive(Clone, Debug)]
struct PackedHeads {
    offsets: Arc<[usize]>,
    h: usize,
    d: usize,
}

impl PackedHeads {
    fn n(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    fn check(&self, l: &Layout) -> Result<()> {
        let (n, w) = l.shape().dims2()?;
        if w != 3 * self.h * self.d {
            candle_core::bail!(
                "packed attention: qkv width {w} is not 3 x {} heads x {}",
                self.h,
                self.d
            );
        }
        if n != self.n() || self.offsets.windows(2).any(|w| w[0] > w[1]) {
            candle_core::bail!("packed attention: offsets do not cover the {n} rows of qkv");
        }
        Ok(())
    }

    /// Σ L² · H · D over the sequences: the size of the score products, which decides whether
    /// the items are worth the thread pool.
    fn score_elems(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|o| (o[1] - o[0]).pow(2))
            .sum::<usize>()
            * self.h
            * self.d
    }

    /// (sequence, head) work items, longest sequences first so the pool stays balanced.
    fn items(&self) -> Vec<(usize, usize)> {
        let mut seqs: Vec<usize> = (0..self.offsets.len().saturating_sub(1)).collect();
        seqs.sort_by_key(|&s| std::cmp::Reverse(self.offsets[s + 1] - self.offsets[s]));
        seqs.iter()
            .flat_map(|&s| (0..self.h).map(move |h| (s, h)))
            .collect()
    }
}

/// P = softmax(scale · q kᵀ) of head h of the sequence at rows [o, o + L) into `p` (L × L).
fn packed_probs<F: Float>(
    qkv: &[F],
    o: usize,
    len: usize,
    h: usize,
    hd: &PackedHeads,
    scale: F,
    p: &mut [F],
) {
    let (c, d) = (hd.h * hd.d, hd.d);
    let w = 3 * c;
    // SAFETY: rows o..o+len of qkv exist (checked offsets); p holds len·len elements.
    unsafe {
        gemm(
            (len, len, d),
            p.as_mut_ptr(),
            len,
            false,
            View::rows(qkv, o * w + h * d, w),
            View::cols(qkv, o * w + c + h * d, w),
            false,
        )
    };
    for row in p.chunks_mut(len) {
        let m = fast_exp::max(row) * scale;
        let inv = F::one() / fast_exp::exp_in_place(row, scale, m);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

fn run_items(items: &[(usize, usize)], flops: usize, work: impl Fn(usize, usize) + Sync + Send) {
    use rayon::prelude::*;
    if items.len() > 1 && flops >= 1 << 15 {
        items.par_iter().for_each(|&(s, h)| work(s, h));
    } else {
        items.iter().for_each(|&(s, h)| work(s, h));
    }
}

fn packed_forward<F: Float>(
    qkv: &[F],
    hd: &PackedHeads,
    scale: f64,
    drop: Option<DropMask>,
) -> Vec<F> {
    let (c, d, n) = (hd.h * hd.d, hd.d, hd.n());
    let w = 3 * c;
    let scale = F::from_f64(scale);
    // Written in full: every (sequence, head) item writes its head's columns of its rows.
    let mut y: Vec<F> = Vec::with_capacity(n * c);
    let yp = SendPtr(y.as_mut_ptr());
    run_items(&hd.items(), hd.score_elems(), |s, h| {
        let (o, len) = (hd.offsets[s], hd.offsets[s + 1] - hd.offsets[s]);
        if len == 0 {
            return;
        }
        let mut p = vec![F::zero(); len * len];
        packed_probs(qkv, o, len, h, hd, scale, &mut p);
        if let Some(m) = drop {
            for (i, row) in p.chunks_mut(len).enumerate() {
                m.apply(row, s, h, i);
            }
        }
        // SAFETY: this item alone writes columns [h·D, (h+1)·D) of rows o..o+len.
        unsafe {
            gemm(
                (len, d, len),
                { yp }.0.add(o * c + h * d),
                c,
                false,
                View::rows(&p, 0, len),
                View::rows(qkv, o * w + 2 * c + h * d, w),
                false,
            )
        };
    });
    // SAFETY: all n·c elements were written (the offsets cover every row, every head ran).
    unsafe { y.set_len(n * c) };
    y
}

fn packed_backward<F: Float>(
    qkv: &[F],
    dy: &[F],
    hd: &PackedHeads,
    scale: f64,
    drop: Option<DropMask>,
) -> Vec<F> {
    let (c, d, n) = (hd.h * hd.d, hd.d, hd.n());
    let w = 3 * c;
    let scale = F::from_f64(scale);
    // Written in full: each item writes its head's q, k and v columns of its rows.
    let mut g: Vec<F> = Vec::with_capacity(n * w);
    let gp = SendPtr(g.as_mut_ptr());
    run_items(&hd.items(), hd.score_elems(), |s, h| {
        let (o, len) = (hd.offsets[s], hd.offsets[s + 1] - hd.offsets[s]);
        if len == 0 {
            return;
        }
        let g0 = { gp }.0;
        let (q_off, k_off, v_off) = (o * w + h * d, o * w + c + h * d, o * w + 2 * c + h * d);
        let dy_off = o * c + h * d;
        let mut p = vec![F::zero(); len * len];
        packed_probs(qkv, o, len, h, hd, scale, &mut p);
        // The weights the forward pass used (after dropout).
        let pd = drop.map(|m| {
            let mut pd = p.clone();
            for (i, row) in pd.chunks_mut(len).enumerate() {
                m.apply(row, s, h, i);
            }
            pd
        });
        let mut ds = vec![F::zero(); len * len];
        // SAFETY: (both products) views lie inside qkv / dy / the local buffers; this item alone
        // writes head h's q, k and v columns of rows o..o+len of g.
        unsafe {
            // dv = P'ᵀ dy
            gemm(
                (len, d, len),
                g0.add(v_off),
                w,
                false,
                View::cols(pd.as_deref().unwrap_or(&p), 0, len),
                View::rows(dy, dy_off, c),
                false,
            );
            // dP' = dy vᵀ
            gemm(
                (len, len, d),
                ds.as_mut_ptr(),
                len,
                false,
                View::rows(dy, dy_off, c),
                View::cols(qkv, v_off, w),
                false,
            );
        }
        for (i, (dr, pr)) in ds.chunks_mut(len).zip(p.chunks(len)).enumerate() {
            if let Some(m) = drop {
                m.apply(dr, s, h, i); // dP = dP' ⊙ mask / (1 - p)
            }
            let dot = fast_exp::sum_by(len, |j| dr[j] * pr[j]);
            for (x, &pv) in dr.iter_mut().zip(pr) {
                *x = scale * pv * (*x - dot);
            }
        }
        // SAFETY: as for the two products above: the views lie inside qkv / ds, and this item
        // alone writes head h's q and k columns of rows o..o+len of g.
        unsafe {
            // dq = dS k, dk = dSᵀ q (dS already carries the scale)
            gemm(
                (len, d, len),
                g0.add(q_off),
                w,
                false,
                View::rows(&ds, 0, len),
                View::rows(qkv, k_off, w),
                false,
            );
            gemm(
                (len, d, len),
                g0.add(k_off),
                w,
                false,
                View::cols(&ds, 0, len),
                View::rows(qkv, q_off, w),
                false,
            );
        }
    });
    // SAFETY: all n·w elements were written.
    unsafe { g.set_len(n * w) };
    g
}

struct PackedAttention {
    heads: PackedHeads,
    scale: f64,
    drop: Option<DropMask>,
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.heads.check(l)?;
        let (n, c) = (self.heads.n(), self.heads.h * self.heads.d);
        float_dispatch!(s, "packed-attention", |F| Ok((
            F::to_cpu_storage_owned(packed_forward::<F>(
                slice(s, l)?,
                &self.heads,
                self.scale,
                self.drop
            )),
            Shape::from((n, c))
        )))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let grad = PackedAttentionGrad {
            heads: self.heads.clone(),
            scale: self.scale,
            drop: self.drop,
        };
        Ok(Some(qkv.apply_op2_no_bwd(&dy.contiguous()?, &grad)?))
    }
}

struct PackedAttentionGrad {
    heads: PackedHeads,
    scale: f64,
    drop: Option<DropMask>,
}

impl CustomOp2 for PackedAttentionGrad {
    fn name(&self) -> &'static str {
        "packed-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.heads.check(l1)?;
        if l2.shape().dims() != [self.heads.n(), self.heads.h * self.heads.d] {
            candle_core::bail!("packed attention grad: output gradient has the wrong shape");
        }
        float_dispatch!(s1, "packed-attention-grad", |F| Ok((
            F::to_cpu_storage_owned(packed_backward::<F>(
                slice(s1, l1)?,
                slice(s2, l2)?,
                &self.heads,
                self.scale,
                self.drop
            )),
            l1.shape().clone()
        )))
    }
}

/// Bidirectional self-attention over a packed batch (no padding): qkv (N, 3 H D) laid out
/// `[q heads | k heads | v heads]`, sequence i at rows `offsets[i]..offsets[i + 1]` -> (N, H D).
/// Each token attends to the tokens of its own sequence only. With `dropout = Some((p, seed))`
/// the attention weights are dropped with probability p (mask derived from the seed; the same
/// seed gives the same mask). CPU, f32 / f64; forward and backward fused.
pub fn packed_attention(
    qkv: &Tensor,
    offsets: Arc<[usize]>,
    heads: usize,
    head_dim: usize,
    dropout: Option<(f64, u64)>,
) -> Result<Tensor> {
    let op = PackedAttention {
        heads: PackedHeads {
            offsets,
            h: heads,
            d: head_dim,
        },
        scale: 1.0 / (head_dim as f64).sqrt(),
        drop: dropout.and_then(|(p, seed)| DropMask::new(p, seed)),
    };
    qkv.contiguous()?.apply_op1(op)
}
