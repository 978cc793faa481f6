//! Inverted dropout drawing its masks from the seedable [`Rng`], so training is reproducible.

use crate::util::rng::Rng;
use candle_core::{Result, Tensor};

/// Training-time dropout state: probability and the generator the masks come from.
pub struct Dropout<'a> {
    /// Probability of zeroing an element.
    pub p: f32,
    /// Source of the masks.
    pub rng: &'a mut Rng,
}

impl Dropout<'_> {
    /// Zero each element with probability `p` and scale the rest by `1 / (1 - p)` (one draw from
    /// the generator seeds the whole mask, see [`mask`]).
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let mask = mask(x.elem_count(), self.p, self.rng.next_u64());
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// Elements per independently seeded stretch of a mask.
const CHUNK: usize = 1 << 14;

/// An inverted-dropout mask of `n` values: 0 with probability `p`, else `1 / (1 - p)`. Drawn in
/// stretches of [`CHUNK`] values, each from its own generator seeded from `seed` and its index,
/// in parallel: the same mask whatever the thread count. Two 24-bit uniforms per 64-bit draw.
pub fn mask(n: usize, p: f32, seed: u64) -> Vec<f32> {
    use rayon::prelude::*;
    let scale = 1.0 / (1.0 - p);
    // Keep a value when its 24-bit uniform u satisfies u >= p * 2^24.
    let cut = (p as f64 * (1u64 << 24) as f64).round() as u32;
    let mut out = vec![0f32; n];
    let fill = |(c, part): (usize, &mut [f32])| {
        let mut rng = Rng::derived(seed, c as u64 + 1);
        for pair in part.chunks_mut(2) {
            let r = rng.next_u64();
            let u = [(r >> 40) as u32, ((r >> 8) & 0xFF_FFFF) as u32];
            for (o, u) in pair.iter_mut().zip(u) {
                *o = if u >= cut { scale } else { 0.0 };
            }
        }
    };
    if n >= 4 * CHUNK {
        out.par_chunks_mut(CHUNK).enumerate().for_each(fill);
    } else {
        out.chunks_mut(CHUNK).enumerate().for_each(fill);
    }
    out
}

/// Apply dropout when training (`Some`), pass through otherwise.
pub fn maybe(x: Tensor, drop: &mut Option<&mut Dropout<'_>>) -> Result<Tensor> {
    match drop {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn mask_rate_scale_and_seeding() {
        let n = 200_000;
        let m = mask(n, 0.1, 42);
        let zeros = m.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
        assert!((zeros - 0.1).abs() < 0.005, "{zeros}");
        assert!(m.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(m, mask(n, 0.1, 42));
        assert_ne!(m, mask(n, 0.1, 43));
        // A short mask is the start of a long one (same stretches, same seeds).
        assert_eq!(mask(1000, 0.1, 42)[..], m[..1000]);
    }
}
