//! The decoder-only Transformer: embedding (+ positions), N pre-norm [`Block`]s with causal
//! self-attention, final norm, LM head.
//!
//! ```text
//! x = wte[ids] (+ wpe[pos])
//! for each block:  x = x + attn(norm1(x));  x = x + mlp(norm2(x))
//! logits = norm_f(x) @ head^T
//! ```

use super::block::{Block, BlockDropout, NormPlacement};
use super::config::{ModelConfig, NormKind, PositionKind};
use super::params::{conv1d_layout, fetch, names, param_specs, ParamStore};
use crate::nn::attention::QkvProj;
use crate::nn::dropout::Dropout;
use crate::nn::{Attention, Linear, Mixing, Mlp, Norm, Rotary};
use crate::weights::safetensors::{load_safetensors, safetensors_bytes};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A decoder-only Transformer language model.
#[derive(Clone, Debug)]
pub struct Transformer {
    pub cfg: ModelConfig,
    /// (V, C)
    wte: Tensor,
    /// (P, C) for learned positions.
    wpe: Option<Tensor>,
    rope: Option<Rotary>,
    blocks: Vec<Block>,
    norm_f: Norm,
    /// (V, C); `None` when tied to `wte`.
    lm_head: Option<Tensor>,
    device: Device,
}

impl Transformer {
    /// Build the model from named tensors (Hugging Face names of `cfg.arch`); `path` names the source in errors.
    pub fn from_tensors(
        cfg: &ModelConfig,
        t: &HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        let spec_shapes: HashMap<String, Vec<usize>> = param_specs(cfg)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        let get = |name: &str| -> Result<Tensor> {
            let shape = spec_shapes.get(name).ok_or_else(|| {
                Error::checkpoint(path, format!("internal: no spec for '{name}'"))
            })?;
            fetch(t, name, shape, path)
        };
        let n = names(cfg.arch);
        let conv = conv1d_layout(cfg.arch);
        let linear = |prefix: String| -> Result<Linear> {
            let w = get(&format!("{prefix}.weight"))?;
            let b = if cfg.bias {
                Some(get(&format!("{prefix}.bias"))?)
            } else {
                None
            };
            Ok(if conv {
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
        let wte = get(&n.wte)?;
        let device = wte.device().clone();
        let dtype = wte.dtype();
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let name = |part: &str| (n.layer)(l, part);
            let qkv = if cfg.arch == super::Arch::Gpt2 {
                QkvProj::Fused(linear(name("qkv"))?)
            } else {
                QkvProj::Split {
                    q: linear(name("q"))?,
                    k: linear(name("k"))?,
                    v: linear(name("v"))?,
                }
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
                placement: NormPlacement::Pre,
                norm1: norm(name("ln1"))?,
                attn: Attention {
                    qkv,
                    out: linear(name("o"))?,
                    num_heads: cfg.num_heads,
                    num_kv_heads: cfg.num_kv_heads,
                    head_dim: cfg.head_dim,
                },
                cross: None,
                norm2: norm(name("ln2"))?,
                mlp,
            });
        }
        let rope = match cfg.position {
            PositionKind::Rotary { theta } => Some(Rotary::new(
                cfg.head_dim,
                cfg.max_position_embeddings,
                theta,
                dtype,
                &device,
            )?),
            PositionKind::Learned => None,
        };
        Ok(Transformer {
            cfg: cfg.clone(),
            wpe: if cfg.position == PositionKind::Learned {
                Some(get(&n.wpe)?)
            } else {
                None
            },
            rope,
            blocks,
            norm_f: norm(n.ln_f.clone())?,
            lm_head: if cfg.tie_word_embeddings {
                None
            } else {
                Some(get(&n.lm_head)?)
            },
            wte,
            device,
        })
    }

    /// The model over trainable parameters (gradients reach `params`).
    pub fn from_params(cfg: &ModelConfig, params: &ParamStore) -> Result<Self> {
        Self::from_tensors(cfg, &params.tensors(), Path::new("<parameters>"))
    }

    /// Load `config.json` + `model.safetensors` from a Hugging Face-layout directory.
    pub fn load_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = ModelConfig::from_file(dir.join("config.json"))?;
        let st = dir.join("model.safetensors");
        let tensors = load_safetensors(&st, device)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
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

    /// Final hidden states: ids (B, T) u32 -> (B, T, C).
    pub fn forward_hidden(&self, ids: &Tensor, drop: Option<&mut Dropout<'_>>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "sequence of {t} positions exceeds the model's maximum of {}",
                self.cfg.max_position_embeddings
            )));
        }
        let c = self.cfg.hidden_size;
        let mut x = self
            .wte
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, c))?; // (B, T, C)
        if let Some(wpe) = &self.wpe {
            x = x.broadcast_add(&wpe.narrow(0, 0, t)?)?; // + (T, C)
        }
        // Decoders drop the embeddings, attention weights and residual branches at one rate.
        let mut drop = drop.map(|d| BlockDropout {
            hidden: d.p,
            attention: d.p,
            rng: &mut *d.rng,
        });
        if let Some(d) = drop.as_mut() {
            x = d.hidden(&x)?;
        }
        let mixing = Mixing::Causal {
            rope: self.rope.as_ref(),
        };
        for block in &self.blocks {
            x = block.forward(&x, &mixing, None, drop.as_mut())?;
        }
        Ok(self.norm_f.forward(&x)?)
    }

    /// Hidden (..., C) -> logits (..., V).
    pub fn head(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.wte);
        Ok(Linear::new(w.clone(), None).forward(h)?)
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
        drop: Option<&mut Dropout<'_>>,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(ids, drop)?; // (B, T, C)
        let w = self.lm_head.as_ref().unwrap_or(&self.wte);
        if crate::kernels::applicable(&h) && w.dtype() == h.dtype() && w.device().is_cpu() {
            // Head and loss as one op: the (B T, V) logits never enter the autograd graph.
            return Ok(crate::kernels::cross_entropy::linear_cross_entropy(
                &h,
                w,
                &targets.flatten_all()?,
            )?);
        }
        let (b, t, c) = h.dims3()?;
        let logits = self.head(&h.reshape((b * t, c))?)?; // (B T, V)
        Ok(crate::nn::loss::cross_entropy(
            &logits,
            &targets.flatten_all()?,
        )?)
    }
}
