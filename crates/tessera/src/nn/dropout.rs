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
    /// Zero each element with probability `p` and scale the rest by `1 / (1 - p)`.
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let scale = 1.0 / (1.0 - self.p);
        let n = x.elem_count();
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if self.rng.uniform_f32() < self.p {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// Apply dropout when training (`Some`), pass through otherwise.
pub fn maybe(x: Tensor, drop: &mut Option<&mut Dropout<'_>>) -> Result<Tensor> {
    match drop {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}
