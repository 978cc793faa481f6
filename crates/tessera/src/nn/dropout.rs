//! Inverted dropout drawing its masks from the seedable [`Rng`], so training is reproducible.

use crate::kernels::{float_dispatch, new_rows, slice, Float};
use crate::util::rng::Rng;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

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
        let seed = self.rng.next_u64();
        if crate::kernels::applicable(x) {
            // One op: the mask is drawn inside the product (and drawn again for the backward
            // pass) instead of being a tensor of its own multiplied by the engine's serial
            // element-wise product. The same values as the tensor form below.
            return x.contiguous()?.apply_op1(MaskOp { p: self.p, seed });
        }
        let mask = mask(x.elem_count(), self.p, seed);
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// `x ⊙ mask(n, p, seed)` as one op; its gradient is `dy ⊙` the same mask.
struct MaskOp {
    p: f32,
    seed: u64,
}

/// `x ⊙ mask(x.len(), p, seed)` ([`mask`]'s values, converted to `F`), stretches in parallel.
fn masked<F: Float>(x: &[F], p: f32, seed: u64) -> Vec<F> {
    new_rows(x.len(), CHUNK, |c, out: &mut [F]| {
        let xs = &x[c * CHUNK..];
        stretch(seed, c, out.len(), p, |j, m| {
            out[j] = xs[j] * F::from_f64(m as f64)
        })
    })
}

impl CustomOp1 for MaskOp {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(s, self.name(), |F| Ok((
            F::to_cpu_storage_owned(masked::<F>(slice(s, l)?, self.p, self.seed)),
            l.shape().clone()
        )))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(MaskOp {
            p: self.p,
            seed: self.seed,
        })?))
    }
}

/// Elements per independently seeded stretch of a mask.
const CHUNK: usize = 1 << 14;

/// An inverted-dropout mask of `n` values: 0 with probability `p`, else `1 / (1 - p)`. Drawn in
/// stretches of [`CHUNK`] values, each from its own generator seeded from `seed` and its index,
/// in parallel: the same mask whatever the thread count. Two 24-bit uniforms per 64-bit draw.
pub fn mask(n: usize, p: f32, seed: u64) -> Vec<f32> {
    new_rows(n, CHUNK, |c, part: &mut [f32]| {
        stretch(seed, c, part.len(), p, |j, m| part[j] = m)
    })
}

/// The `len` mask values of stretch `c`, in order, to `put(j, value)`: 0 when the 24-bit uniform
/// is below `p · 2^24`, else `1 / (1 - p)`.
fn stretch(seed: u64, c: usize, len: usize, p: f32, mut put: impl FnMut(usize, f32)) {
    let scale = 1.0 / (1.0 - p);
    let cut = (p as f64 * (1u64 << 24) as f64).round() as u32;
    let mut rng = Rng::derived(seed, c as u64 + 1);
    let mut j = 0;
    while j < len {
        let r = rng.next_u64();
        for u in [(r >> 40) as u32, ((r >> 8) & 0xFF_FFFF) as u32] {
            if j < len {
                put(j, if u >= cut { scale } else { 0.0 });
                j += 1;
            }
        }
    }
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

    fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_dtype(candle_core::DType::F64))
            .and_then(|d| d.to_scalar::<f64>())
            .unwrap()
    }

    #[test]
    fn fused_dropout_equals_the_mask_product_and_its_gradient() {
        use super::Dropout;
        use crate::util::rng::Rng;
        use candle_core::{DType, Device, Tensor, Var};
        for dtype in [DType::F32, DType::F64] {
            let n = 7 * 7023; // several stretches and an odd tail
            let rand = || {
                Tensor::rand(-1f32, 1f32, (n / 7, 7), &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap()
            };
            let x = Var::from_tensor(&rand()).unwrap();
            let mut rng = Rng::new(5);
            let seed = Rng::new(5).next_u64();
            let y = Dropout {
                p: 0.25,
                rng: &mut rng,
            }
            .apply(x.as_tensor())
            .unwrap();
            let m = Tensor::from_vec(mask(n, 0.25, seed), (n / 7, 7), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let want = x.as_tensor().mul(&m).unwrap();
            assert_eq!(max_abs_diff(&y, &want), 0.0);
            // d(sum(y ⊙ w))/dx = w ⊙ mask.
            let w = rand();
            let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let got = g.get(x.as_tensor()).unwrap();
            assert_eq!(max_abs_diff(got, &(w * m).unwrap()), 0.0);
        }
    }
}
