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
                fc.act_fusable(x, *act).is_some() && proj.fusable(x).is_some()
            }
            Mlp::Gated { gate, up, down, .. } => {
                gate_up(gate, up, x).is_some() && down.fusable(x).is_some()
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
                if let Some((w, b)) = gate_up(gate, up, x) {
                    // One product of the stacked (2I, C) weight and the gating as one op.
                    let stack = crate::kernels::segment::stack_rows;
                    let (w, b) = (stack(&w)?, b.map(|b| stack(&b)).transpose()?);
                    let g = act.gated_linear_tensor(x, &w, b.as_ref())?; // (B, T, I)
                    return down.forward(&g);
                }
                // act(gate) ⊙ up as one op (the activation's output is not kept for backward).
                let g = act.gated_tensor(&gate.forward(x)?, &up.forward(x)?)?; // (B, T, I)
                down.forward(&g)
            }
        }
    }
}

/// The gate and up weights (and biases, both or none; taken without biases when the gate has
/// none) that [`Mlp::forward`] stacks into one fused product, when both are dense and fusable.
#[allow(clippy::type_complexity)]
fn gate_up<'a>(
    gate: &'a Linear,
    up: &'a Linear,
    x: &Tensor,
) -> Option<([&'a Tensor; 2], Option<[&'a Tensor; 2]>)> {
    let (Some((wg, false)), Some((wu, false))) = (gate.fusable(x), up.fusable(x)) else {
        return None;
    };
    let b = match (gate.bias(), up.bias()) {
        (Some(bg), Some(bu)) => Some([bg, bu]),
        _ => None,
    };
    (b.is_some() || gate.bias().is_none()).then_some(([wg, wu], b))
}
