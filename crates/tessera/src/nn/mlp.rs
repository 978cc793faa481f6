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
                    let w = Tensor::cat(&[wg, wu], 0)?;
                    let b = match (gate.bias(), up.bias()) {
                        (Some(bg), Some(bu)) => Some(Tensor::cat(&[bg, bu], 0)?),
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
