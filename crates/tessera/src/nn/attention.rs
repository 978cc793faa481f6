//! Multi-head attention as tensor ops (training and batched scoring): causal self-attention
//! (decoders, with grouped-query heads), bidirectional with an additive padding mask or over packed
//! sequences (encoders), and cross-attention to an encoder's output (encoder-decoders). Incremental
//! decoding with a key/value cache is the inference backend's ([`crate::infer`]).

use super::dropout::{self, Dropout};
use super::loss::softmax;
use super::{Linear, Rotary};
use crate::util::rng::Rng;
use candle_core::{Result, Tensor};
use std::sync::Arc;

/// Which positions a block's self-attention lets each position see.
#[derive(Clone, Debug)]
pub enum Mixing<'a> {
    /// Itself and the positions before it (decoders), with rotary positions or none.
    Causal { rope: Option<&'a Rotary> },
    /// Every unmasked position (encoders): an additive key mask (B, 1, 1, T) or none.
    Bidirectional { mask: Option<&'a Tensor> },
    /// Every position of its own sequence, for sequences packed end to end without padding:
    /// sequence i is rows `offsets[i]..offsets[i + 1]` of (N, C) (encoders, no padding work).
    Packed { offsets: Arc<[usize]> },
    /// Every key, with these additive scores (B or 1, H, T, T): a relative position bias plus
    /// the causal or padding mask (T5).
    Scored { add: &'a Tensor },
}

/// How queries, keys and values are projected.
#[derive(Clone, Debug)]
pub enum QkvProj {
    /// One projection to `[q | k | v]` (GPT-2's `c_attn`).
    Fused(Linear),
    /// Separate projections (Llama).
    Split { q: Linear, k: Linear, v: Linear },
}

/// The dense weights of the projection the fused causal attention takes (see
/// `Attention::projection`): q, k, v weights (and biases), or a fused weight, its bias and
/// whether it is stored (in, out).
enum Projection<'a> {
    Split([&'a Tensor; 3], Option<[&'a Tensor; 3]>),
    Fused(&'a Tensor, Option<&'a Tensor>, bool),
}

/// Self-attention block.
#[derive(Clone, Debug)]
pub struct Attention {
    pub qkv: QkvProj,
    pub out: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Factor on q·k; none = 1/sqrt(head_dim) (T5: 1). The fused kernels apply only to the
    /// default.
    pub scale: Option<f64>,
}

/// (T, T) additive mask: 0 where query `i` may see key `j` (`j <= i`).
pub fn causal_mask(t: usize, x: &Tensor) -> Result<Tensor> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in (i + 1)..t {
            m[i * t + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::from_vec(m, (t, t), x.device())?.to_dtype(x.dtype())
}

/// Scaled causal softmax from engine primitives: scores (..., T, T) -> weights.
pub fn reference_softmax(scores: &Tensor, scale: f64, t: usize) -> Result<Tensor> {
    let att = (scores * scale)?;
    let att = if t > 1 {
        att.broadcast_add(&causal_mask(t, &att)?)?
    } else {
        att
    };
    softmax(&att)
}

/// Repeat each of the Hkv key/value heads `n_rep` times: (B, Hkv, T, D) -> (B, Hkv*n_rep, T, D).
fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, hkv, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, hkv, n_rep, t, d))?
        .contiguous()?
        .reshape((b, hkv * n_rep, t, d))
}

/// Additive key mask (B, 1, 1, T) from a 0/1 attention mask (B, T): 0 where a key is a real token,
/// [`MASKED`] where it is padding. Broadcasts over heads and queries.
pub fn padding_mask(attention_mask: &Tensor) -> Result<Tensor> {
    let (b, t) = attention_mask.dims2()?;
    let m = attention_mask.to_dtype(candle_core::DType::F32)?;
    let add = ((m - 1.0)? * -(MASKED as f64))?; // 0 for tokens, MASKED for padding
    add.reshape((b, 1, 1, t))
}

/// Longest sequence for which bidirectional attention uses the fused per-head kernel (without
/// attention dropout); longer ones use matrix products, which win there.
pub const FUSED_MAX_T: usize = 64;

/// The additive score of a padded key: large and negative, so its weight is exactly 0 after softmax
/// (finite, so a row never becomes NaN).
pub const MASKED: f32 = -1e30;

/// Scaled softmax with an additive key mask from engine primitives: scores (B, H, T, Tk),
/// mask (B, 1, 1, Tk) or none -> weights.
pub fn reference_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let att = (scores * scale)?;
    let att = match mask {
        Some(m) => att.broadcast_add(&m.to_dtype(att.dtype())?)?,
        None => att,
    };
    softmax(&att)
}

impl Attention {
    /// The factor on the scores q·k.
    pub fn scale(&self) -> f64 {
        self.scale
            .unwrap_or_else(|| 1.0 / (self.head_dim as f64).sqrt())
    }

    /// Queries (B, H, T, D) of x (B, T, C), keys and values (B, Hkv, S, D) of `kv` (B, S, C)
    /// (x itself for self-attention).
    fn project(&self, x: &Tensor, kv: Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _c) = x.dims3()?;
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q, k, v) = match (&self.qkv, kv) {
            (QkvProj::Fused(l), None) => {
                let qkv = l.forward(x)?; // (B, T, (H + 2 Hkv) D)
                (
                    qkv.narrow(2, 0, h * d)?,
                    qkv.narrow(2, h * d, hkv * d)?,
                    qkv.narrow(2, (h + hkv) * d, hkv * d)?,
                )
            }
            (QkvProj::Fused(_), Some(_)) => {
                return Err(candle_core::Error::Msg(
                    "cross-attention needs separate q and k/v projections".into(),
                ))
            }
            (QkvProj::Split { q, k, v }, kv) => {
                let src = kv.unwrap_or(x);
                (q.forward(x)?, k.forward(src)?, v.forward(src)?)
            }
        };
        let s = k.dim(1)?;
        let q = q.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous()?; // (B, H, T, D)
        let k = k.reshape((b, s, hkv, d))?.transpose(1, 2)?.contiguous()?; // (B, Hkv, S, D)
        let v = v.reshape((b, s, hkv, d))?.transpose(1, 2)?.contiguous()?; // (B, Hkv, S, D)
        Ok((q, k, v))
    }

    /// The block's self-attention as `mixing` says: x (B, T, C), or (N, C) for packed sequences
    /// -> the same shape. `drop` = (attention-weight dropout rate, generator) while training.
    pub fn mix(
        &self,
        x: &Tensor,
        mixing: &Mixing<'_>,
        drop: Option<(f32, &mut Rng)>,
    ) -> Result<Tensor> {
        match mixing {
            Mixing::Causal { rope } => {
                let mut d = drop.map(|(p, rng)| Dropout { p, rng });
                self.forward(x, *rope, &mut d.as_mut())
            }
            Mixing::Bidirectional { mask } => {
                let mut d = drop.map(|(p, rng)| Dropout { p, rng });
                self.forward_bidirectional(x, *mask, &mut d.as_mut())
            }
            Mixing::Packed { offsets } => self.forward_packed(x, offsets.clone(), drop),
            Mixing::Scored { add } => {
                let mut d = drop.map(|(p, rng)| Dropout { p, rng });
                let (q, k, v) = self.project(x, None)?;
                self.attend(q, k, v, Some(add), &mut d.as_mut())
            }
        }
    }

    /// Bidirectional self-attention over sequences packed end to end without padding: x (N, C)
    /// where sequence i is rows `offsets[i]..offsets[i + 1]` -> (N, C). One fused op
    /// ([`crate::kernels::encoder_attention::packed_attention`]); its dropout mask comes from a
    /// seed drawn from the generator.
    pub fn forward_packed(
        &self,
        x: &Tensor,
        offsets: Arc<[usize]>,
        drop: Option<(f32, &mut Rng)>,
    ) -> Result<Tensor> {
        if self.scale.is_some() {
            return Err(candle_core::Error::Msg(
                "packed attention runs the default 1/sqrt(D) scale only".into(),
            ));
        }
        let qkv = match &self.qkv {
            QkvProj::Fused(l) => l.forward(x)?,
            QkvProj::Split { q, k, v } => {
                // One product for q, k and v: the three weights side by side (dense weights
                // without adapters only).
                let plain = [q, k, v].iter().all(|l| l.fusable(x).is_some());
                match (q.bias(), k.bias(), v.bias()) {
                    (Some(a), Some(b), Some(c)) if plain => {
                        let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
                        Linear::new(w, Some(Tensor::cat(&[a, b, c], 0)?)).forward(x)?
                    }
                    _ => Tensor::cat(&[q.forward(x)?, k.forward(x)?, v.forward(x)?], 1)?,
                }
            }
        }; // (N, 3 C)
        let dropout = match drop {
            Some((p, rng)) if p > 0.0 => Some((p as f64, rng.next_u64())),
            _ => None,
        };
        let a = crate::kernels::encoder_attention::packed_attention(
            &qkv,
            offsets,
            self.num_heads,
            self.head_dim,
            dropout,
        )?;
        self.out.forward(&a)
    }

    /// Cross-attention (the encoder-decoder slot): queries from x (B, T, C), keys and values from
    /// `memory` (B, S, C) with an additive key mask (B, 1, 1, S) from [`padding_mask`] (or none);
    /// every query sees every unmasked memory position -> (B, T, C).
    pub fn forward_cross(
        &self,
        x: &Tensor,
        memory: &Tensor,
        mask: Option<&Tensor>,
        drop: &mut Option<&mut Dropout<'_>>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project(x, Some(memory))?;
        self.attend(q, k, v, mask, drop)
    }

    /// Softmax attention of projected heads: q (B, H, T, D), k and v (B, Hkv, S, D), additive
    /// scores broadcast to (B, H, T, S) (a key mask (B, 1, 1, S), or full scores) or none ->
    /// output projection of the merged heads (B, T, C).
    fn attend(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Option<&Tensor>,
        drop: &mut Option<&mut Dropout<'_>>,
    ) -> Result<Tensor> {
        let (b, h, t, d) = q.dims4()?;
        let k = repeat_kv(k, h / self.num_kv_heads)?; // (B, H, S, D)
        let v = repeat_kv(v, h / self.num_kv_heads)?;
        let scale = self.scale();
        let scores = q.matmul(&k.t()?)?; // (B, H, T, S)
        let att = if crate::kernels::applicable(&scores) {
            let masked = match mask {
                Some(m) => (scores * scale)?.broadcast_add(&m.to_dtype(q.dtype())?)?,
                None => (scores * scale)?,
            };
            crate::kernels::softmax::scaled_softmax(&masked, 1.0, false)?
        } else {
            reference_masked_softmax(&scores, scale, mask)?
        };
        let att = dropout::maybe(att, drop)?;
        let y = att.matmul(&v)?; // (B, H, T, D)
        let y = y.transpose(1, 2)?.reshape((b, t, h * d))?; // (B, T, H D)
        self.out.forward(&y)
    }

    /// Bidirectional self-attention (every query sees every unmasked key): x (B, T, C) and an
    /// additive key mask (B, 1, 1, T) from [`padding_mask`] (or none) -> (B, T, C).
    pub fn forward_bidirectional(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        drop: &mut Option<&mut Dropout<'_>>,
    ) -> Result<Tensor> {
        let (b, t, _c) = x.dims3()?;
        let (h, d) = (self.num_heads, self.head_dim);
        let (q, k, v) = self.project(x, None)?;
        // A zero rate drops nothing and draws nothing: the fused kernel applies.
        let no_dropout = drop.as_ref().is_none_or(|d| d.p <= 0.0);
        if no_dropout && t <= FUSED_MAX_T && crate::kernels::applicable(&q) {
            let k = repeat_kv(k, h / self.num_kv_heads)?; // (B, H, T, D)
            let v = repeat_kv(v, h / self.num_kv_heads)?;
            let m = match mask {
                Some(m) => Some(m.reshape((b, t))?), // (B, T)
                None => None,
            };
            let y = crate::kernels::encoder_attention::masked_attention(
                &q,
                &k,
                &v,
                m.as_ref(),
                self.scale(),
            )?; // (B, H, T, D)
            let y = y.transpose(1, 2)?.reshape((b, t, h * d))?; // (B, T, H D)
            return self.out.forward(&y);
        }
        self.attend(q, k, v, mask, drop)
    }

    /// Causal self-attention: x (B, T, C) -> (B, T, C).
    ///
    /// On the CPU with the default score scale and no attention dropout, a dense projection
    /// (`Attention::projection`: split q/k/v with or without rotary positions, or a fused one
    /// without) runs with the attention as one fused op
    /// ([`crate::kernels::causal_attention::projected_causal_attention`]); adapted or frozen
    /// projections feed the fused attention on their outputs; otherwise
    /// [`Attention::forward_reference`].
    pub fn forward(
        &self,
        x: &Tensor,
        rope: Option<&Rotary>,
        drop: &mut Option<&mut Dropout<'_>>,
    ) -> Result<Tensor> {
        let no_dropout = drop.as_ref().is_none_or(|d| d.p <= 0.0);
        let fusable = no_dropout && self.kernels_apply(x);
        if let (true, Some(p)) = (fusable, self.projection(x, rope)) {
            let (w, b, transposed) = match p {
                // One (q + 2 kv, C) projection from the three (a copy of the weights per call,
                // small next to the activations).
                Projection::Split(w, b) => {
                    let stack = crate::kernels::segment::stack_rows;
                    (stack(&w)?, b.map(|b| stack(&b)).transpose()?, false)
                }
                Projection::Fused(w, b, transposed) => (w.clone(), b.cloned(), transposed),
            };
            // Projection, rotary and attention as one op: qkv stays inside it.
            let y = crate::kernels::causal_attention::projected_causal_attention(
                x,
                &w,
                b.as_ref(),
                transposed,
                self.num_heads,
                self.num_kv_heads,
                self.head_dim,
                rope.map(Rotary::theta),
            )?; // (B, T, H D)
            return self.out.forward(&y);
        }
        if let (QkvProj::Split { q, k, v }, true) = (&self.qkv, fusable) {
            if q.lora().is_some() || q.qmatrix().is_some() {
                // Adapted or frozen projections (LoRA): each projection on its own, then
                // rotary and attention as one op.
                let qkv = Tensor::cat(&[q.forward(x)?, k.forward(x)?, v.forward(x)?], 2)?;
                let y = crate::kernels::causal_attention::causal_attention_rope(
                    &qkv,
                    self.num_heads,
                    self.num_kv_heads,
                    self.head_dim,
                    rope.map(Rotary::theta),
                )?; // (B, T, H D)
                return self.out.forward(&y);
            }
        }
        if let QkvProj::Fused(l) = &self.qkv {
            if rope.is_none() && fusable {
                let qkv = l.forward(x)?; // (B, T, (H + 2 Hkv) D)
                let y = crate::kernels::causal_attention::causal_attention(
                    &qkv,
                    self.num_heads,
                    self.num_kv_heads,
                    self.head_dim,
                )?; // (B, T, H D)
                return self.out.forward(&y);
            }
        }
        self.forward_reference(x, rope, drop)
    }

    /// Whether the fused kernels apply to `x` at all (dropout aside): the default score scale,
    /// CPU f32/f64, a (B, T, C) input.
    fn kernels_apply(&self, x: &Tensor) -> bool {
        self.scale.is_none() && crate::kernels::applicable(x) && x.rank() == 3
    }

    /// The projection [`Attention::forward`] fuses with the causal attention, when it does:
    /// dense q, k, v weights (their biases all or none; a layer without a q bias is taken
    /// without biases), or a fused projection without rotary positions.
    fn projection(&self, x: &Tensor, rope: Option<&Rotary>) -> Option<Projection<'_>> {
        match &self.qkv {
            QkvProj::Split { q, k, v } => match (q.fusable(x), k.fusable(x), v.fusable(x)) {
                (Some((wq, false)), Some((wk, false)), Some((wv, false))) => {
                    let b = match (q.bias(), k.bias(), v.bias()) {
                        (Some(bq), Some(bk), Some(bv)) => Some([bq, bk, bv]),
                        _ => None,
                    };
                    (b.is_some() || q.bias().is_none())
                        .then_some(Projection::Split([wq, wk, wv], b))
                }
                _ => None,
            },
            QkvProj::Fused(l) if rope.is_none() => l
                .fusable(x)
                .map(|(w, transposed)| Projection::Fused(w, l.bias(), transposed)),
            QkvProj::Fused(_) => None,
        }
    }

    /// Whether [`Attention::forward`] without dropout runs `x` through the fused projected
    /// attention and the fused output product alone, no other op: what a training segment needs
    /// ([`crate::kernels::segment`]).
    pub(crate) fn runs_fused(&self, x: &Tensor, rope: Option<&Rotary>) -> bool {
        self.kernels_apply(x) && self.projection(x, rope).is_some() && self.out.fusable(x).is_some()
    }

    /// [`Attention::forward`] from engine ops and the separate softmax kernel: q, k, v split into
    /// (B, H, T, D) heads, batched products, causal softmax, products, heads merged.
    pub fn forward_reference(
        &self,
        x: &Tensor,
        rope: Option<&Rotary>,
        drop: &mut Option<&mut Dropout<'_>>,
    ) -> Result<Tensor> {
        let (b, t, _c) = x.dims3()?;
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q, k, v) = self.project(x, None)?;
        let (q, k) = match rope {
            Some(r) => (r.apply(&q)?, r.apply(&k)?),
            None => (q, k),
        };
        // Grouped-query attention without copying keys/values per query head: the n_rep query
        // heads sharing a key/value head are stacked along time, (B, Hkv, n_rep T, D).
        let n_rep = h / hkv;
        let tk = k.dims()[2];
        let qg = q.contiguous()?.reshape((b, hkv, n_rep * t, d))?;
        let scale = self.scale();
        let scores = qg.matmul(&k.t()?)?.reshape((b, hkv, n_rep, t, tk))?; // (B, Hkv, n_rep, T, Tk)
        let att = if crate::kernels::applicable(&scores) {
            crate::kernels::softmax::scaled_softmax(&scores, scale, t > 1)?
        } else {
            reference_softmax(&scores, scale, t)?
        };
        let att = dropout::maybe(att.reshape((b, hkv, n_rep * t, tk))?, drop)?;
        let y = att.matmul(&v)?.reshape((b, h, t, d))?; // (B, H, T, D)
        let y = y.transpose(1, 2)?.reshape((b, t, h * d))?; // (B, T, H D)
        self.out.forward(&y)
    }
}
