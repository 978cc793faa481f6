//! The position-wise MLP: plain (`proj(act(fc(x)))`) or gated (`down(act(gate(x)) * up(x))`).

use super::Linear;
use crate::kernels::activation::Activation;
use candle_core::{Result, Tensor};

/// Apply an activation.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    act.apply_tensor(x)
}

/// A feed-forward block.
#[derive(Clone, Debug)]
pub enum Mlp {
    /// GPT-2 style.
    Plain {
        fc: Linear,
        proj: Linear,
        act: Activation,
    },
    /// Llama style (SwiGLU with SiLU).
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
        act: Activation,
    },
}

impl Mlp {
    /// Whether [`Mlp::forward`] runs `x` through the fused kernels alone (a GELU first layer
    /// fused with its activation, or the stacked gated product; fused output product), no other
    /// op: what a training segment needs ([`crate::kernels::segment`]). Mirrors `forward`.
    pub(crate) fn runs_fused(&self, x: &Tensor) -> bool {
        match self {
            Mlp::Plain { fc, proj, act } => {
                matches!(act, Activation::GeluTanh | Activation::Gelu)
                    && fc.fusable(x).is_some()
                    && proj.fusable(x).is_some()
            }
            Mlp::Gated { gate, up, down, .. } => {
                matches!(gate.fusable(x), Some((_, false)))
                    && matches!(up.fusable(x), Some((_, false)))
                    && (gate.bias().is_some() == up.bias().is_some())
                    && down.fusable(x).is_some()
            }
        }
    }

    /// (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mlp::Plain { fc, proj, act } => proj.forward(&fc.forward_act(x, *act)?),
            Mlp::Gated {
                gate,
                up,
                down,
                act,
            } => {
                if let (Some((wg, false)), Some((wu, false))) = (gate.fusable(x), up.fusable(x)) {
                    // One product of the stacked (2I, C) weight and the gating as one op.
                    let w = crate::kernels::segment::stack_rows(&[wg, wu])?;
                    let b = match (gate.bias(), up.bias()) {
                        (Some(bg), Some(bu)) => {
                            Some(crate::kernels::segment::stack_rows(&[bg, bu])?)
                        }
                        _ => None,
                    };
                    if b.is_some() || gate.bias().is_none() {
                        let g = act.gated_linear_tensor(x, &w, b.as_ref())?; // (B, T, I)
                        return down.forward(&g);
                    }
                }
                // act(gate) ⊙ up as one op (the activation's output is not kept for backward).
                let g = act.gated_tensor(&gate.forward(x)?, &up.forward(x)?)?; // (B, T, I)
                down.forward(&g)
            }
        }
    }
}
