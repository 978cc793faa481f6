//! The one Transformer block every model is a configuration of.
//!
//! ```text
//! pre-norm  (GPT-2, Llama):  x = x + attn(norm1(x));  [x = x + cross(normc(x), mem)];  x = x + mlp(norm2(x))
//! post-norm (BERT, nn.Transformer):  x = norm1(x + attn(x));  [x = normc(x + cross(x, mem))];  x = norm2(x + mlp(x))
//! ```
//!
//! The self-attention's visibility ([`Mixing`]: causal with or without rotary positions,
//! bidirectional with a padding mask, packed sequences) is an argument of the forward pass, not a
//! kind of block. The cross-attention slot (queries from the block's input, keys and values from
//! an encoder's output) is what an encoder-decoder's decoder blocks fill; decoder-only and encoder
//! blocks leave it empty.

use crate::nn::dropout::Dropout;
use crate::nn::{Attention, Mixing, Mlp, Norm};
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::Tensor;

/// Where a block normalizes relative to its residual connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// Normalize each sublayer's input; the residual stream itself is never normalized (GPT-2,
    /// Llama; the model ends with a final norm).
    Pre,
    /// Normalize after adding each sublayer's output to the residual stream (BERT, the original
    /// Transformer).
    Post,
}

/// The cross-attention slot of an encoder-decoder's decoder block.
#[derive(Clone, Debug)]
pub struct CrossAttention {
    /// Queries from the block's stream, keys and values from the memory.
    pub attn: Attention,
    /// Its norm (placed as the block's other norms).
    pub norm: Norm,
}

/// The sequence a cross-attention slot reads: an encoder's output.
#[derive(Clone, Copy, Debug)]
pub struct Memory<'a> {
    /// (B, S, C)
    pub states: &'a Tensor,
    /// Additive key mask (B, 1, 1, S) from [`crate::nn::attention::padding_mask`], or none.
    pub mask: Option<&'a Tensor>,
}

/// Dropout while training: one generator, a rate for residual branches and one for attention
/// weights, drawn in a fixed order (attention weights, then the branch, sublayer by sublayer).
pub struct BlockDropout<'a> {
    /// Sublayer outputs before they join the residual stream (and the embeddings).
    pub hidden: f32,
    /// Attention weights.
    pub attention: f32,
    /// Where the masks come from.
    pub rng: &'a mut Rng,
}

impl BlockDropout<'_> {
    /// Residual-branch dropout of `x`.
    pub fn hidden(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(Dropout {
            p: self.hidden,
            rng: &mut *self.rng,
        }
        .apply(x)?)
    }
}

/// One Transformer block: self-attention, an optional cross-attention, an MLP, each a residual
/// sublayer with its norm.
#[derive(Clone, Debug)]
pub struct Block {
    pub placement: NormPlacement,
    pub norm1: Norm,
    pub attn: Attention,
    pub cross: Option<CrossAttention>,
    pub norm2: Norm,
    pub mlp: Mlp,
}

impl Block {
    /// x (B, T, C), or (N, C) with [`Mixing::Packed`] -> the same shape. `memory` is required
    /// exactly when the block has a cross-attention slot.
    pub fn forward(
        &self,
        x: &Tensor,
        mixing: &Mixing<'_>,
        memory: Option<Memory<'_>>,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        // While training (a gradient sink installed), a pre-norm sublayer made of fused kernels
        // alone is one node of the engine's graph (`kernels::segment`); the same numbers.
        let segments = crate::kernels::segment::active()
            && self.placement == NormPlacement::Pre
            && drop
                .as_ref()
                .is_none_or(|d| d.hidden <= 0.0 && d.attention <= 0.0)
            && crate::kernels::applicable(x);
        let fused_attn =
            segments && matches!(mixing, Mixing::Causal { rope } if self.attn.runs_fused(x, *rope));
        let x = self.sublayer(&self.norm1, x, &mut drop, fused_attn, |h, d| {
            Ok(self
                .attn
                .mix(h, mixing, d.map(|d| (d.attention, &mut *d.rng)))?)
        })?;
        let x = match (&self.cross, memory) {
            (Some(c), Some(m)) => self.sublayer(&c.norm, &x, &mut drop, false, |h, d| {
                let mut ad = d.map(|d| Dropout {
                    p: d.attention,
                    rng: &mut *d.rng,
                });
                Ok(c.attn
                    .forward_cross(h, m.states, m.mask, &mut ad.as_mut())?)
            })?,
            (None, None) => x,
            (Some(_), None) => {
                return Err(Error::Input(
                    "a block with cross-attention needs the encoder's output (memory)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Input(
                    "memory given to a block without cross-attention".into(),
                ))
            }
        };
        let fused_mlp = segments && self.mlp.runs_fused(&x);
        self.sublayer(&self.norm2, &x, &mut drop, fused_mlp, |h, _| {
            Ok(self.mlp.forward(h)?)
        })
    }

    /// One residual sublayer `f` with `norm` where the block places it, the branch dropped out
    /// while training. With `segment` (the caller checked: training, pre-norm, no dropout, a
    /// branch of fused kernels alone) the sublayer is one node of the engine's graph
    /// ([`crate::kernels::segment::residual`]).
    fn sublayer(
        &self,
        norm: &Norm,
        x: &Tensor,
        drop: &mut Option<&mut BlockDropout<'_>>,
        segment: bool,
        f: impl FnOnce(&Tensor, Option<&mut BlockDropout<'_>>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if segment {
            return crate::kernels::segment::residual(x, |x| f(&norm.forward(x)?, None));
        }
        let branch_in = match self.placement {
            NormPlacement::Pre => norm.forward(x)?,
            NormPlacement::Post => x.clone(),
        };
        let mut y = f(&branch_in, drop.as_deref_mut())?;
        if let Some(d) = drop.as_deref_mut() {
            y = d.hidden(&y)?;
        }
        let sum = (x + y)?;
        Ok(match self.placement {
            NormPlacement::Pre => sum,
            NormPlacement::Post => norm.forward(&sum)?,
        })
    }
}
