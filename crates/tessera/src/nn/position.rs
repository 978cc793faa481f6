//! Rotary position embedding (the half-split layout of Hugging Face Llama).

use candle_core::{DType, Device, Result, Tensor, D};

/// Precomputed cos/sin tables for rotary embeddings.
#[derive(Clone, Debug)]
pub struct Rotary {
    /// (P, D/2)
    cos: Tensor,
    /// (P, D/2)
    sin: Tensor,
    /// The base θ (the fused attention kernel builds its own tables from it).
    theta: f64,
}

impl Rotary {
    /// Tables for `max_pos` positions and head size `head_dim`, base `theta`.
    pub fn new(
        head_dim: usize,
        max_pos: usize,
        theta: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        // inv_freq is computed in f32 as the reference does; the angles in f32 too.
        let inv_freq = crate::kernels::rotary::inv_freqs(head_dim, theta);
        let n = max_pos
            .checked_mul(half)
            .ok_or_else(|| candle_core::Error::Msg(format!("{max_pos} positions: too many")))?;
        let table = |what: &str| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| {
                candle_core::Error::Msg(format!(
                    "cannot allocate the rotary {what} table for {max_pos} positions"
                ))
            })?;
            Ok(v)
        };
        let (mut cos, mut sin) = (table("cosine")?, table("sine")?);
        for p in 0..max_pos {
            for &f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (max_pos, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_pos, half), device)?.to_dtype(dtype)?;
        Ok(Rotary { cos, sin, theta })
    }

    /// Rotate `x` (B, H, T, D) at positions `0..T`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (_b, _h, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, 0, t)?; // (T, D/2)
        let sin = self.sin.narrow(0, 0, t)?;
        let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?; // (T, D)
        let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?; // (B, H, T, D)
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    /// The base θ.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// Number of positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }
}

/// T5's bucket of a key at `offset` = key position − query position: half the buckets for each
/// direction in a bidirectional stack (positive offsets in the upper half), only the past in a
/// causal one (future offsets share bucket 0 with offset 0; the mask hides them anyway). The first
/// half of a direction's buckets are exact offsets; the rest grow logarithmically up to
/// `max_distance`, beyond which all share the last bucket.
pub fn relative_bucket(
    offset: i64,
    bidirectional: bool,
    buckets: usize,
    max_distance: usize,
) -> usize {
    let (mut n, mut base) = (buckets as i64, 0i64);
    let dist = if bidirectional {
        n /= 2;
        if offset > 0 {
            base = n;
        }
        offset.abs()
    } else {
        (-offset).max(0)
    };
    let exact = n / 2;
    if dist < exact {
        return (base + dist) as usize;
    }
    // In f32, as transformers computes it (`.float()`, the divisor a double rounded to f32),
    // truncated toward zero.
    let log = (dist as f32 / exact as f32).ln() / (max_distance as f64 / exact as f64).ln() as f32;
    let large = exact + (log * (n - exact) as f32) as i64;
    (base + large.min(n - 1)) as usize
}

/// A stack's relative position bias (T5): a learned (buckets, H) table, read through
/// [`relative_bucket`] into additive attention scores.
#[derive(Clone, Debug)]
pub struct RelativeBias {
    /// (buckets, H)
    pub table: Tensor,
    pub buckets: usize,
    pub max_distance: usize,
    /// Signed offsets (an encoder) or the past only (a decoder).
    pub bidirectional: bool,
}

impl RelativeBias {
    /// The bias of `tq` queries at positions `offset..offset + tq` over `tk` keys at `0..tk`:
    /// (1, H, Tq, Tk).
    pub fn scores(&self, tq: usize, tk: usize, offset: usize) -> Result<Tensor> {
        let mut idx = Vec::with_capacity(tq * tk);
        for i in 0..tq {
            for j in 0..tk {
                let rel = j as i64 - (i + offset) as i64;
                idx.push(
                    relative_bucket(rel, self.bidirectional, self.buckets, self.max_distance)
                        as u32,
                );
            }
        }
        let h = self.table.dim(1)?;
        let idx = Tensor::from_vec(idx, tq * tk, self.table.device())?;
        self.table
            .index_select(&idx, 0)? // (Tq Tk, H)
            .reshape((tq, tk, h))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    /// Buckets of T5's defaults (32 buckets, distance 128), worked out from the formula.
    #[test]
    fn relative_buckets_follow_t5() {
        // Bidirectional: 16 per direction, 8 exact.
        assert_eq!(relative_bucket(0, true, 32, 128), 0);
        assert_eq!(relative_bucket(-3, true, 32, 128), 3);
        assert_eq!(relative_bucket(3, true, 32, 128), 19);
        // 8 + floor(ln(12/8) / ln(16) * 8) = 8 + 1.
        assert_eq!(relative_bucket(-12, true, 32, 128), 9);
        assert_eq!(relative_bucket(-1000, true, 32, 128), 15);
        assert_eq!(relative_bucket(1000, true, 32, 128), 31);
        // Causal: the past only, 32 buckets, 16 exact; the future is bucket 0.
        assert_eq!(relative_bucket(-15, false, 32, 128), 15);
        assert_eq!(relative_bucket(5, false, 32, 128), 0);
        // 16 + floor(ln(32/16) / ln(8) * 16) = 16 + 5.
        assert_eq!(relative_bucket(-32, false, 32, 128), 21);
        assert_eq!(relative_bucket(-500, false, 32, 128), 31);
    }
}
