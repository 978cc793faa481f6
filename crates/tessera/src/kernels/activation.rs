//! The activations of the feed-forward blocks: one definition each (the function and its
//! derivative, [`UnaryFn`]) that the training ops (fused, with backward) and the inference slices
//! both run.

use super::erf::Erf;
use super::gelu::GeluTanh;
use super::gelu_erf::GeluErf;
use super::unary::{apply, UnaryFn};
use crate::{Error, Result};
use candle_core::Tensor;

/// An activation function, with its Hugging Face `config.json` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU, exact erf form (`gelu`).
    Gelu,
    /// SiLU / swish (`silu`); in a gated MLP this is SwiGLU.
    Silu,
    /// ReLU.
    Relu,
}

impl Activation {
    /// Parse a Hugging Face activation name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            other => {
                return Err(Error::Config(format!(
                    "unknown activation '{other}' (expected one of gelu, gelu_new, gelu_pytorch_tanh, silu, swish, relu)"
                )))
            }
        })
    }

    /// The Hugging Face name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::GeluTanh => "gelu_new",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::Relu => "relu",
        }
    }

    /// `x ← act(x)` on a slice (inference).
    pub fn apply_slice(self, x: &mut [f32]) {
        fn each<A: UnaryFn>(x: &mut [f32]) {
            x.iter_mut().for_each(|v| *v = A::f(*v));
        }
        match self {
            Activation::GeluTanh => each::<GeluTanh>(x),
            Activation::Gelu => each::<GeluErf>(x),
            Activation::Silu => each::<Silu>(x),
            Activation::Relu => each::<Relu>(x),
        }
    }

    /// `g ← act(g) ⊙ u` on slices: the gated MLP's gate (inference).
    pub fn apply_gated(self, g: &mut [f32], u: &[f32]) {
        fn each<A: UnaryFn>(g: &mut [f32], u: &[f32]) {
            for (a, &b) in g.iter_mut().zip(u) {
                *a = A::f(*a) * b;
            }
        }
        match self {
            Activation::GeluTanh => each::<GeluTanh>(g, u),
            Activation::Gelu => each::<GeluErf>(g, u),
            Activation::Silu => each::<Silu>(g, u),
            Activation::Relu => each::<Relu>(g, u),
        }
    }

    /// `act(x Wgᵀ + bg) ⊙ (x Wuᵀ + bu)` as one fused op with its backward (stacked `w` =
    /// [Wg; Wu], `b` = [bg; bu]); CPU f32/f64 only (the caller checks [`super::applicable`]).
    pub fn gated_linear_tensor(
        self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        use super::linear::linear_gated;
        match self {
            Activation::GeluTanh => linear_gated::<GeluTanh>(x, w, b),
            Activation::Gelu => linear_gated::<GeluErf>(x, w, b),
            Activation::Silu => linear_gated::<Silu>(x, w, b),
            Activation::Relu => linear_gated::<Relu>(x, w, b),
        }
    }

    /// `act(gate) ⊙ up` as one tensor op on the CPU in f32/f64 (same shapes); the engine's ops
    /// elsewhere.
    pub fn gated_tensor(self, gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
        use super::unary::apply_gated;
        if super::applicable(gate) && gate.dtype() == up.dtype() && gate.dims() == up.dims() {
            return match self {
                Activation::GeluTanh => apply_gated(gate, up, GeluTanh),
                Activation::Gelu => apply_gated(gate, up, GeluErf),
                Activation::Silu => apply_gated(gate, up, Silu),
                Activation::Relu => apply_gated(gate, up, Relu),
            };
        }
        self.apply_tensor(gate)? * up
    }

    /// `act(x)` as a tensor op: the fused kernel with its backward on the CPU in f32/f64, the
    /// engine's own op elsewhere.
    pub fn apply_tensor(self, x: &Tensor) -> candle_core::Result<Tensor> {
        if super::applicable(x) {
            return match self {
                Activation::GeluTanh => apply(x, GeluTanh),
                Activation::Gelu => apply(x, GeluErf),
                Activation::Silu => apply(x, Silu),
                Activation::Relu => apply(x, Relu),
            };
        }
        match self {
            Activation::GeluTanh => x.gelu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Silu => x.silu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// SiLU: `x σ(x)`; `d/dx = σ(x) (1 + x (1 − σ(x)))`.
#[derive(Clone, Copy)]
pub(crate) struct Silu;

impl UnaryFn for Silu {
    const NAME: &'static str = "fused-silu";
    const GRAD_NAME: &'static str = "fused-silu-grad";

    #[inline(always)]
    fn f<T: Erf>(x: T) -> T {
        x / (T::one() + (-x).vexp())
    }

    #[inline(always)]
    fn df<T: Erf>(x: T) -> T {
        let s = T::one() / (T::one() + (-x).vexp());
        s * (T::one() + x * (T::one() - s))
    }
}

/// ReLU: `max(x, 0)`; `d/dx = 1` above 0, else 0 (0 at 0, as PyTorch).
#[derive(Clone, Copy)]
pub(crate) struct Relu;

impl UnaryFn for Relu {
    const NAME: &'static str = "fused-relu";
    const GRAD_NAME: &'static str = "fused-relu-grad";

    #[inline(always)]
    fn f<T: Erf>(x: T) -> T {
        if x > T::zero() {
            x
        } else {
            T::zero()
        }
    }

    #[inline(always)]
    fn df<T: Erf>(x: T) -> T {
        if x > T::zero() {
            T::one()
        } else {
            T::zero()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_slices_match_tensors() {
        for a in [
            Activation::GeluTanh,
            Activation::Gelu,
            Activation::Silu,
            Activation::Relu,
        ] {
            assert_eq!(Activation::parse(a.hf_name()).unwrap(), a);
            let x: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 5.0).collect();
            let t = Tensor::new(x.as_slice(), &candle_core::Device::Cpu).unwrap();
            let want: Vec<f32> = a.apply_tensor(&t).unwrap().to_vec1().unwrap();
            let mut got = x.clone();
            a.apply_slice(&mut got);
            assert_eq!(got, want, "{a:?}");
            // Against the engine's own op (f64 reference).
            let t64 = t.to_dtype(candle_core::DType::F64).unwrap();
            let r: Vec<f64> = match a {
                Activation::GeluTanh => t64.gelu(),
                Activation::Gelu => t64.gelu_erf(),
                Activation::Silu => t64.silu(),
                Activation::Relu => t64.relu(),
            }
            .unwrap()
            .to_vec1()
            .unwrap();
            for (g, w) in got.iter().zip(&r) {
                assert!((*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "{a:?}");
            }
        }
        assert!(Activation::parse("tanh").is_err());
    }
}
