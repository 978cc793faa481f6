//! GELU, exact erf form (BERT's `gelu`): the function and its derivative, run by the shared fused
//! element-wise op of [`super::unary`].
//!
//! y = x Φ(x) = 0.5 x (1 + erf(x / √2));  dy/dx = Φ(x) + x φ(x),  φ(x) = exp(-x²/2) / √(2π).
//! The engine's own backward of `gelu_erf` rounds 1/√(2π) to six digits (a 1e-6 relative error
//! in the gradient); this one is exact to the float type (f32: see [`super::erf::Erf`]).

use super::erf::Erf;
use super::unary::{apply, UnaryFn};
use candle_core::{Result, Tensor};

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7; // 1 / sqrt(2 pi)

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
