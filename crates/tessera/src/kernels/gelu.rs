//! GELU (tanh approximation, `gelu_new`): the function and its derivative, run by the shared
//! fused element-wise op of [`super::unary`].

use super::erf::Erf;
use super::unary::{apply, UnaryFn};
use candle_core::{Result, Tensor};

const K: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const C: f64 = 0.044_715;

#[derive(Clone, Copy)]
pub(crate) struct GeluTanh;

impl UnaryFn for GeluTanh {
    const NAME: &'static str = "fused-gelu-tanh";
    const GRAD_NAME: &'static str = "fused-gelu-tanh-grad";

    // 0.5 (1 + tanh(z)) = sigmoid(2z): the same function through one exp instead of a slow tanh.
    #[inline(always)]
    fn f<T: Erf>(x: T) -> T {
        let (k2, c) = (T::from_f64(2.0 * K), T::from_f64(C));
        let z2 = k2 * (x + c * x * x * x);
        x / (T::one() + (-z2).vexp())
    }

    #[inline(always)]
    fn df<T: Erf>(x: T) -> T {
        let (k2, c, three) = (T::from_f64(2.0 * K), T::from_f64(C), T::from_f64(3.0));
        let s = T::one() / (T::one() + (-(k2 * (x + c * x * x * x))).vexp());
        s + x * s * (T::one() - s) * k2 * (T::one() + three * c * x * x)
    }
}

/// GELU with the tanh approximation (`gelu_new`), fused on the CPU.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    apply(x, GeluTanh)
}
