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
