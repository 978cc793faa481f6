//! GELU, exact erf form (BERT's `gelu`): the function and its derivative, run by the shared fused
//! element-wise op of [`super::unary`].
//!
//! y = x Φ(x) = 0.5 x (1 + erf(x / √2));  dy/dx = Φ(x) + x φ(x),  φ(x) = exp(-x²/2) / √(2π).
//! The engine's own backward of `gelu_erf` rounds 1/√(2π) to six digits (a 1e-6 relative error
//! in the gradient); this one is exact to the float type (f32: see [`Erf`]).

use super::unary::{apply, UnaryFn};
use super::Float;
use candle_core::{Result, Tensor};

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7; // 1 / sqrt(2 pi)

/// erf in the float's own precision: f64 exact (libm), f32 a rational minimax approximation on
/// [-4, 4] (erf is ±1 in f32 beyond), within 5e-7 of the exact value and branch-free, so the loops
/// vectorize.
pub trait Erf: Float {
    fn erf(self) -> Self;
}
impl Erf for f32 {
    #[inline(always)]
    fn erf(self) -> f32 {
        let x = self.clamp(-4.0, 4.0);
        let x2 = x * x;
        let mut p = -2.726_142_3e-10_f32;
        for c in [
            2.770_681_4e-8,
            -2.101_024e-6,
            -5.692_506_4e-5,
            -7.349_906_3e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ] {
            p = p * x2 + c;
        }
        let mut q = -1.456_607_2e-5_f32;
        for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
            q = q * x2 + c;
        }
        x * p / q
    }
}
impl Erf for f64 {
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct GeluErf;

impl UnaryFn for GeluErf {
    const NAME: &'static str = "fused-gelu-erf";
    const GRAD_NAME: &'static str = "fused-gelu-erf-grad";

    #[inline(always)]
    fn f<T: Erf>(x: T) -> T {
        let half = T::from_f64(0.5);
        (Erf::erf(x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)) + T::one()) * half * x
    }

    #[inline(always)]
    fn df<T: Erf>(x: T) -> T {
        let half = T::from_f64(0.5);
        let cdf = half * (T::one() + Erf::erf(x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)));
        cdf + x * T::from_f64(FRAC_1_SQRT_2PI) * (-(x * x) * half).vexp()
    }
}

/// GELU, exact erf form, fused on the CPU (f32 / f64): the engine's `gelu_erf` values (f64
/// identical, f32 within 1e-6 relative), with an exact, parallel backward.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    apply(x, GeluErf)
}
