//! The one Transformer: embeddings, N [`Block`]s, an optional final norm, an LM head and a pooler.
//! GPT-2, Llama and BERT are configurations of it ([`TransformerConfig`]), loaded by their
//! families' tensor names ([`super::family`]).
//!
//! ```text
//! x = wte[ids] (+ positions: learned table | sinusoidal table; rotary acts inside attention)
//!              (+ token types)  (then embedding norm, if any)
//! for each block:   pre-norm:  x = x + attn(norm1(x)) [+ cross] ;  x = x + mlp(norm2(x))
//!                   post-norm: x = norm1(x + attn(x)) [+ cross] ;  x = norm2(x + mlp(x))
//! h = norm_f(x) (pre-norm)  or  x (post-norm)
//! logits = h @ head^T (decoders) | pooled = tanh(pooler(h[first])) (BERT)
//! ```
//!
//! Self-attention is causal (decoders: [`Transformer::forward_hidden`], [`Transformer::loss`]) or
//! bidirectional (encoders: [`Transformer::encode`] with a padding mask,
//! [`Transformer::encode_packed`] over sequences packed without padding).

use super::block::{Block, BlockDropout, CrossAttention, Memory, NormPlacement};
use super::config::{AttentionKind, NormKind, PositionKind, TransformerConfig};
use super::encoder::Packed;
use super::params::{fetch, names, param_specs_with, ParamStore};
use crate::nn::attention::{padding_mask, QkvProj};
use crate::nn::position::RelativeBias;
use crate::nn::{Attention, Linear, Mixing, Mlp, Norm, Rotary};
use crate::weights::safetensors::safetensors_bytes;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A target position left out of the loss (padding, or a prompt token in supervised
/// fine-tuning).
pub const IGNORE: u32 = u32::MAX;

/// The positions of a batch that carry a target (not [`IGNORE`]): their hidden rows, targets and
/// flat indices. Losses select them before the head, so ignored positions cost no head product.
pub struct TargetRows {
    /// (n, C)
    pub hidden: Tensor,
    pub targets: Vec<u32>,
    /// Flat index (b·T + t) of each row.
    pub rows: Vec<u32>,
}

impl TargetRows {
    /// Select from hidden states (B, T, C) with `targets` (B·T); an error when none carries one.
    pub fn select(h: &Tensor, targets: &[u32]) -> Result<Self> {
        let (b, t, c) = h.dims3()?;
        if targets.len() != b * t {
            return Err(Error::Input(format!(
                "{} targets for a batch of {b} x {t}",
                targets.len()
            )));
        }
        let rows: Vec<u32> = (0..b * t)
            .filter(|&i| targets[i] != IGNORE)
            .map(|i| i as u32)
            .collect();
        if rows.is_empty() {
            return Err(Error::Input("no target positions in the batch".into()));
        }
        let kept = rows.iter().map(|&i| targets[i as usize]).collect();
        let idx = Tensor::new(rows.as_slice(), h.device())?;
        Ok(TargetRows {
            hidden: h.reshape((b * t, c))?.index_select(&idx, 0)?,
            targets: kept,
            rows,
        })
    }

    /// The targets as a (n,) u32 tensor on the rows' device.
    pub fn targets_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::new(self.targets.as_slice(), self.hidden.device())?)
    }
}

/// A Transformer built from a [`TransformerConfig`].
#[derive(Clone, Debug)]
pub struct Transformer {
    pub cfg: TransformerConfig,
    /// (V, C)
    wte: Tensor,
    /// (P, C): the learned or sinusoidal position table (none with rotary positions).
    positions: Option<Tensor>,
    /// (types, C) token-type embeddings (BERT).
    token_types: Option<Tensor>,
    /// Norm over the summed embeddings (BERT).
    emb_norm: Option<Norm>,
    rope: Option<Rotary>,
    /// T5's relative position bias (added to every block's self-attention scores).
    rel_bias: Option<RelativeBias>,
    blocks: Vec<Block>,
    /// Final norm (pre-norm models).
    norm_f: Option<Norm>,
    /// (V, C); `None` when tied to `wte` (or for an encoder).
    lm_head: Option<Tensor>,
    /// BERT's `pooler.dense` (C -> C), applied with tanh to the first token.
    pub pooler: Option<Linear>,
    device: Device,
}

/// How positions index the position table.
enum Positions<'a> {
    /// Positions `0..T` of a (B, T) batch.
    Prefix(usize),
    /// One position per packed row (N,) u32.
    Rows(&'a Tensor),
}

/// The sinusoidal position table (P, C) (Vaswani et al.) in the half-split layout: column j < C/2
/// holds sin(p / 10000^(2j/C)), column C/2 + j the cosine of the same angle.
pub fn sinusoidal_table(positions: usize, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; positions * dim];
    for p in 0..positions {
        let row = &mut out[p * dim..(p + 1) * dim];
        for j in 0..half {
            let angle = p as f64 / 10000f64.powf(2.0 * j as f64 / dim as f64);
            row[j] = angle.sin() as f32;
            row[half + j] = angle.cos() as f32;
        }
    }
    out
}

impl Transformer {
    /// Build the model from named tensors (the Hugging Face names of `cfg.arch`); `path` names
    /// the source in errors. BERT task checkpoints (`bert.` prefix) are recognized.
    pub fn from_tensors(
        cfg: &TransformerConfig,
        t: &HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<Self> {
        Self::from_tensors_prefixed(cfg, t, detect_prefix(t), path)
    }

    /// [`Transformer::from_tensors`] with the model's tensors under `prefix`. A BERT pooler is
    /// loaded when present.
    pub fn from_tensors_prefixed(
        cfg: &TransformerConfig,
        t: &HashMap<String, Tensor>,
        prefix: &str,
        path: &Path,
    ) -> Result<Self> {
        Self::from_parts(cfg, t, &HashMap::new(), prefix, path)
    }

    /// [`Transformer::from_tensors_prefixed`] with some projection weights kept in a block
    /// format (`frozen`, by tensor name, (out, in)): those layers are [`Linear::frozen`] (LoRA on
    /// a quantized base); every other tensor comes from `t`.
    pub fn from_parts(
        cfg: &TransformerConfig,
        t: &HashMap<String, Tensor>,
        frozen: &HashMap<String, std::sync::Arc<crate::kernels::quant::QMatrix>>,
        prefix: &str,
        path: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        let spec_shapes: HashMap<String, Vec<usize>> = param_specs_with(cfg, prefix, true)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        let get = |name: &str| -> Result<Tensor> {
            let shape = spec_shapes.get(name).ok_or_else(|| {
                Error::checkpoint(path, format!("internal: no spec for '{name}'"))
            })?;
            fetch(t, name, shape, path)
        };
        let n = names(cfg.arch, prefix);
        let linear = |prefix: String| -> Result<Linear> {
            let b = if cfg.bias {
                Some(get(&format!("{prefix}.bias"))?)
            } else {
                None
            };
            let wname = format!("{prefix}.weight");
            if let Some(q) = frozen.get(&wname) {
                let want = spec_shapes.get(&wname).cloned().unwrap_or_default();
                if n.conv1d || want != [q.rows(), q.cols()] {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "tensor '{wname}' has shape [{}, {}], expected {want:?}",
                            q.rows(),
                            q.cols()
                        ),
                    ));
                }
                return Ok(Linear::frozen(q.clone(), b)?);
            }
            let w = get(&wname)?;
            Ok(if n.conv1d {
                Linear::new_transposed(w, b)
            } else {
                Linear::new(w, b)
            })
        };
        let norm = |prefix: String| -> Result<Norm> {
            let weight = get(&format!("{prefix}.weight"))?;
            Ok(match cfg.norm {
                NormKind::LayerNorm => Norm::LayerNorm {
                    weight,
                    bias: get(&format!("{prefix}.bias"))?,
                    eps: cfg.norm_eps,
                },
                NormKind::RmsNorm => Norm::RmsNorm {
                    weight,
                    eps: cfg.norm_eps,
                },
            })
        };
        let attention = |qkv: QkvProj, out: Linear| Attention {
            qkv,
            out,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale: cfg.attention_scale,
        };
        let wte = get(&n.wte)?;
        let device = wte.device().clone();
        let dtype = wte.dtype();
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let name = |part: &str| (n.layer)(l, part);
            let qkv = if n.fused_qkv {
                QkvProj::Fused(linear(name("qkv"))?)
            } else {
                QkvProj::Split {
                    q: linear(name("q"))?,
                    k: linear(name("k"))?,
                    v: linear(name("v"))?,
                }
            };
            let cross = if cfg.cross_attention {
                Some(CrossAttention {
                    attn: attention(
                        QkvProj::Split {
                            q: linear(name("xq"))?,
                            k: linear(name("xk"))?,
                            v: linear(name("xv"))?,
                        },
                        linear(name("xo"))?,
                    ),
                    norm: norm(name("lnx"))?,
                })
            } else {
                None
            };
            let mlp = if cfg.gated_mlp {
                Mlp::Gated {
                    gate: linear(name("gate"))?,
                    up: linear(name("up"))?,
                    down: linear(name("down"))?,
                    act: cfg.activation,
                }
            } else {
                Mlp::Plain {
                    fc: linear(name("fc"))?,
                    proj: linear(name("proj"))?,
                    act: cfg.activation,
                }
            };
            blocks.push(Block {
                placement: cfg.norm_placement,
                norm1: norm(name("ln1"))?,
                attn: attention(qkv, linear(name("o"))?),
                cross,
                norm2: norm(name("ln2"))?,
                mlp,
            });
        }
        let rel_bias = match cfg.position {
            PositionKind::Relative {
                buckets,
                max_distance,
            } => Some(RelativeBias {
                table: get(&n.rel_bias)?,
                buckets,
                max_distance,
                bidirectional: cfg.attention == AttentionKind::Bidirectional,
            }),
            _ => None,
        };
        let (positions, rope) = match cfg.position {
            PositionKind::Relative { .. } => (None, None),
            PositionKind::Learned => (Some(get(&n.wpe)?), None),
            PositionKind::Sinusoidal => {
                let (p, c) = (cfg.max_position_embeddings, cfg.hidden_size);
                let table = sinusoidal_table(p, c);
                (
                    Some(Tensor::from_vec(table, (p, c), &device)?.to_dtype(dtype)?),
                    None,
                )
            }
            PositionKind::Rotary { theta } => (
                None,
                Some(Rotary::new(
                    cfg.head_dim,
                    cfg.max_position_embeddings,
                    theta,
                    dtype,
                    &device,
                )?),
            ),
        };
        let pooler = if t.contains_key(&format!("{}.weight", n.pooler)) {
            Some(Linear::new(
                get(&format!("{}.weight", n.pooler))?,
                Some(get(&format!("{}.bias", n.pooler))?),
            ))
        } else {
            None
        };
        Ok(Transformer {
            cfg: cfg.clone(),
            positions,
            token_types: if cfg.type_vocab_size > 0 {
                Some(get(&n.wtt)?)
            } else {
                None
            },
            emb_norm: if cfg.embedding_norm {
                Some(norm(n.ln_emb.clone())?)
            } else {
                None
            },
            rope,
            rel_bias,
            blocks,
            norm_f: if cfg.norm_placement == NormPlacement::Pre {
                Some(norm(n.ln_f.clone())?)
            } else {
                None
            },
            lm_head: if cfg.is_decoder() && !cfg.tie_word_embeddings {
                Some(get(&n.lm_head)?)
            } else {
                None
            },
            pooler,
            wte,
            device,
        })
    }

    /// The projection `part` (q, k, v, o, gate, up, down, fc, proj, qkv; the names of
    /// [`super::family::LayerNamer`]) of block `layer`, if the block has it.
    pub fn linear_mut(&mut self, layer: usize, part: &str) -> Option<&mut Linear> {
        use crate::nn::attention::QkvProj;
        let b = self.blocks.get_mut(layer)?;
        Some(match (part, &mut b.attn.qkv, &mut b.mlp) {
            ("q", QkvProj::Split { q, .. }, _) => q,
            ("k", QkvProj::Split { k, .. }, _) => k,
            ("v", QkvProj::Split { v, .. }, _) => v,
            ("qkv", QkvProj::Fused(l), _) => l,
            ("o", _, _) => &mut b.attn.out,
            ("gate", _, Mlp::Gated { gate, .. }) => gate,
            ("up", _, Mlp::Gated { up, .. }) => up,
            ("down", _, Mlp::Gated { down, .. }) => down,
            ("fc", _, Mlp::Plain { fc, .. }) => fc,
            ("proj", _, Mlp::Plain { proj, .. }) => proj,
            _ => return None,
        })
    }

    /// The model over trainable parameters (gradients reach `params`).
    pub fn from_params(cfg: &TransformerConfig, params: &ParamStore) -> Result<Self> {
        Self::from_tensors(cfg, &params.tensors(), Path::new("<parameters>"))
    }

    /// Load `config.json` + `model.safetensors` from a Hugging Face-layout directory (any
    /// family; integer buffers such as BERT's `position_ids` are skipped).
    pub fn load_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = TransformerConfig::from_file(dir.join("config.json"))?;
        let (tensors, st) = super::encoder::load_float_tensors(dir, dtype, device)?;
        Self::from_tensors(&cfg, &tensors, &st)
    }

    /// Tensors in checkpoint order and naming (tied head omitted, as transformers saves it).
    pub fn named_tensors(params: &ParamStore) -> Vec<(String, Tensor)> {
        params
            .specs
            .iter()
            .zip(&params.vars)
            .map(|(s, v)| (s.name.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Serialize parameters as `model.safetensors` bytes.
    pub fn safetensors_bytes(params: &ParamStore) -> Result<Vec<u8>> {
        safetensors_bytes(&Self::named_tensors(params))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.wte.dtype()
    }

    /// The summed embeddings of `ids` ((B, T) -> (B, T, C), or packed (N,) -> (N, C)), normed
    /// and dropped out as the configuration says.
    fn embed(
        &self,
        ids: &Tensor,
        pos: Positions<'_>,
        types: Option<&Tensor>,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let flat = ids.flatten_all()?;
        if flat.elem_count() > 0 {
            let max_id = flat.max(0)?.to_scalar::<u32>()?;
            if max_id as usize >= self.cfg.vocab_size {
                return Err(Error::Input(format!(
                    "token id {max_id} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        let mut shape = ids.dims().to_vec();
        shape.push(self.cfg.hidden_size);
        let mut x = self.wte.index_select(&flat, 0)?.reshape(shape.as_slice())?;
        if self.cfg.scale_embedding {
            x = (x * (self.cfg.hidden_size as f64).sqrt())?;
        }
        if let Some(table) = &self.positions {
            x = match pos {
                Positions::Prefix(t) => x.broadcast_add(&table.narrow(0, 0, t)?)?, // + (T, C)
                Positions::Rows(rows) => (x + table.index_select(rows, 0)?)?,
            };
        }
        if let Some(tt) = &self.token_types {
            x = match types {
                Some(ty) => {
                    let e = tt.index_select(&ty.flatten_all()?, 0)?;
                    (x + e.reshape(shape.as_slice())?)?
                }
                None => x.broadcast_add(&tt.narrow(0, 0, 1)?)?, // + (1, C)
            };
        }
        if let Some(n) = &self.emb_norm {
            x = n.forward(&x)?;
        }
        if let Some(d) = drop {
            x = d.hidden(&x)?;
        }
        Ok(x)
    }

    fn check_len(&self, t: usize) -> Result<()> {
        if t > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "sequence of {t} tokens exceeds the model's maximum of {}",
                self.cfg.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// The blocks, then the final norm if the model has one.
    fn blocks(
        &self,
        mut x: Tensor,
        mixing: &Mixing<'_>,
        memory: Option<Memory<'_>>,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        for block in &self.blocks {
            x = block.forward(&x, mixing, memory, drop.as_deref_mut())?;
        }
        match &self.norm_f {
            Some(n) => Ok(n.forward(&x)?),
            None => Ok(x),
        }
    }

    fn need(&self, kind: AttentionKind, what: &str) -> Result<()> {
        if self.cfg.attention == kind {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "{what} needs {} self-attention; this {:?} model's is {:?}",
                match kind {
                    AttentionKind::Causal => "causal",
                    AttentionKind::Bidirectional => "bidirectional",
                },
                self.cfg.arch,
                self.cfg.attention
            )))
        }
    }

    /// Final hidden states of a decoder: ids (B, T) u32 -> (B, T, C).
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        self.forward_hidden_with(ids, None, drop)
    }

    /// [`Transformer::forward_hidden`] for a decoder whose blocks have the cross-attention slot:
    /// `memory` is the encoder's output (required exactly when the slot is there).
    pub fn forward_hidden_with(
        &self,
        ids: &Tensor,
        memory: Option<Memory<'_>>,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        self.need(AttentionKind::Causal, "decoding")?;
        let (_b, t) = ids.dims2()?;
        self.check_len(t)?;
        let x = self.embed(ids, Positions::Prefix(t), None, drop.as_deref_mut())?;
        if let Some(rb) = &self.rel_bias {
            let add = rb
                .scores(t, t, 0)?
                .broadcast_add(&crate::nn::attention::causal_mask(t, &x)?)?;
            return self.blocks(x, &Mixing::Scored { add: &add }, memory, drop);
        }
        let mixing = Mixing::Causal {
            rope: self.rope.as_ref(),
        };
        self.blocks(x, &mixing, memory, drop)
    }

    /// Hidden states of an encoder: ids (B, T) u32, attention mask (B, T) (1 = token,
    /// 0 = padding; none = all tokens), token types (B, T) u32 (none = all 0) -> (B, T, C).
    pub fn encode(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_types: Option<&Tensor>,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        self.need(AttentionKind::Bidirectional, "encoding")?;
        let (_b, t) = ids.dims2()?;
        self.check_len(t)?;
        let x = self.embed(ids, Positions::Prefix(t), token_types, drop.as_deref_mut())?;
        let mask = match attention_mask {
            Some(m) => Some(padding_mask(m)?.to_dtype(x.dtype())?), // (B, 1, 1, T)
            None => None,
        };
        if let Some(rb) = &self.rel_bias {
            let bias = rb.scores(t, t, 0)?.to_dtype(x.dtype())?; // (1, H, T, T)
            let add = match &mask {
                Some(m) => bias.broadcast_add(m)?, // (B, H, T, T)
                None => bias,
            };
            return self.blocks(x, &Mixing::Scored { add: &add }, None, drop);
        }
        let mixing = Mixing::Bidirectional {
            mask: mask.as_ref(),
        };
        self.blocks(x, &mixing, None, drop)
    }

    /// Hidden states of an encoder for a packed batch (no padding): (N, C), where sequence i is
    /// rows `packed.offsets[i]..packed.offsets[i + 1]`. The same numbers as
    /// [`Transformer::encode`] at the real tokens, without computing anything for padding.
    pub fn encode_packed(
        &self,
        packed: &Packed,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        self.need(AttentionKind::Bidirectional, "encoding")?;
        if self.rel_bias.is_some() {
            return Err(Error::Input(
                "packed encoding does not run relative position biases (T5); use encode".into(),
            ));
        }
        self.check_len(packed.max_len)?;
        let x = self.embed(
            &packed.ids,
            Positions::Rows(&packed.positions),
            packed.token_types.as_ref(),
            drop.as_deref_mut(),
        )?;
        let mixing = Mixing::Packed {
            offsets: packed.offsets.clone(),
        };
        self.blocks(x, &mixing, None, drop)
    }

    /// The LM head's matrix (V, C): its own, or the tied token embeddings.
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// Hidden (..., C) -> logits (..., V).
    pub fn head(&self, h: &Tensor) -> Result<Tensor> {
        Ok(Linear::new(self.head_weight().clone(), None).forward(h)?)
    }

    /// Logits for every position: ids (B, T) -> (B, T, V).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let h = self.forward_hidden(ids, None)?;
        self.head(&h)
    }

    /// Mean cross-entropy of predicting `targets` (B, T) from `ids` (B, T), optionally with dropout.
    pub fn loss(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(ids, drop)?; // (B, T, C)
        self.head_loss(&h, targets)
    }

    /// [`Transformer::loss`] over the positions whose target is not [`IGNORE`] (their mean):
    /// only those rows reach the head (supervised fine-tuning scores the answer alone).
    pub fn loss_masked(
        &self,
        ids: &Tensor,
        targets: &[u32],
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(ids, drop)?; // (B, T, C)
        let rows = TargetRows::select(&h, targets)?;
        self.head_loss(&rows.hidden, &rows.targets_tensor()?)
    }

    /// Mean cross-entropy of the head on hidden rows `h` (..., C) against `targets`.
    fn head_loss(&self, h: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let w = self.head_weight();
        if crate::kernels::applicable(h) && w.dtype() == h.dtype() && w.device().is_cpu() {
            // Head and loss as one op: the (B T, V) logits never enter the autograd graph.
            return Ok(crate::kernels::cross_entropy::linear_cross_entropy(
                h,
                w,
                &targets.flatten_all()?,
            )?);
        }
        let c = h.dim(h.rank() - 1)?;
        let logits = self.head(&h.reshape((h.elem_count() / c, c))?)?; // (B T, V)
        Ok(crate::nn::loss::cross_entropy(
            &logits,
            &targets.flatten_all()?,
        )?)
    }

    /// The first token's hidden state of each sequence of a packed batch: (N, C) -> (B, C).
    pub fn first_tokens(&self, hidden: &Tensor, packed: &Packed) -> Result<Tensor> {
        Ok(hidden.index_select(&packed.first_rows()?, 0)?)
    }

    fn pooler(&self) -> Result<&Linear> {
        self.pooler.as_ref().ok_or_else(|| {
            Error::Input("this checkpoint has no pooler (pooler.dense) to pool with".into())
        })
    }

    /// BERT's pooled output of a packed batch: tanh(pooler(first token)), (N, C) -> (B, C).
    pub fn pool_packed(&self, hidden: &Tensor, packed: &Packed) -> Result<Tensor> {
        Ok(self
            .pooler()?
            .forward(&self.first_tokens(hidden, packed)?)?
            .tanh()?)
    }

    /// BERT's pooled output: tanh(pooler(h[:, 0])) for hidden states (B, T, C) -> (B, C).
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?; // (B, C)
        Ok(self.pooler()?.forward(&cls)?.tanh()?)
    }
}

/// The name prefix under which a checkpoint stores a BERT encoder (`""` or `"bert."`).
pub fn detect_prefix(tensors: &HashMap<String, Tensor>) -> &'static str {
    if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_table_is_the_formula() {
        let (p, c) = (7, 8);
        let t = sinusoidal_table(p, c);
        assert_eq!(t[0..4], [0.0; 4]);
        assert_eq!(t[4..8], [1.0; 4]);
        for pos in 0..p {
            for j in 0..c / 2 {
                let w = 1.0 / 10000f64.powf(2.0 * j as f64 / c as f64);
                let a = pos as f64 * w;
                assert!((t[pos * c + j] as f64 - a.sin()).abs() < 1e-6);
                assert!((t[pos * c + c / 2 + j] as f64 - a.cos()).abs() < 1e-6);
            }
        }
        // The first column is sin(p): 1 radian per position.
        assert!((t[c] - 1f32.sin()).abs() < 1e-7);
    }
}
