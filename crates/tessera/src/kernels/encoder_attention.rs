//! Bidirectional attention with an additive key mask, fused on the CPU for short sequences:
//! one parallel work item per (batch, head) computes `softmax(scale · q kᵀ + mask) v` without
//! materializing the (B, H, T, T) weights or dispatching many tiny matrix products.
//!
//! Backward (P the weights, dY the output gradient, all per (batch, head)):
//!   dV = Pᵀ dY,  dP = dY Vᵀ,  dS = P ⊙ (dP - rowsum(dP ⊙ P)),  dQ = scale · dS K,  dK = scale · dSᵀ Q
//! computed from engine ops, so it runs on any device.

use super::{float_dispatch, slice, Float};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType, D};

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
        let p = crate::nn::loss::softmax(&s)?; // (B, H, T, T)
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
