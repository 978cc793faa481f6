//! Parameter names, shapes and initialization, and the trainable store.
//!
//! Names are the Hugging Face checkpoint names of the model's family ([`super::family`]), so loading and saving is a
//! name lookup and a saved `model.safetensors` loads in transformers unchanged.

use super::block::NormPlacement;
use super::config::{NormKind, PositionKind, TransformerConfig};
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// How a parameter is initialized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// All zeros (biases).
    Zeros,
    /// All ones (norm weights).
    Ones,
    /// Uniform on (-bound, bound) (LoRA's A, as PEFT's Kaiming-uniform: bound 1/√in).
    Uniform(f64),
}

impl ParamSpec {
    /// Fresh values drawn as `init` says (fallible: the shape comes from a config file).
    pub fn init_tensor(&self, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        use crate::util::alloc::{filled, zeroed};
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::Config(format!("{}: too many parameters", self.name)))?;
        let what = format!("parameter {}", self.name);
        let data: Vec<f32> = match self.init {
            Init::Normal(std) => {
                let mut v = filled(n, 0.0f32, &what)?;
                v.iter_mut().for_each(|x| *x = (rng.normal() * std) as f32);
                v
            }
            Init::Uniform(bound) => {
                let mut v = filled(n, 0.0f32, &what)?;
                v.iter_mut()
                    .for_each(|x| *x = ((rng.uniform() * 2.0 - 1.0) * bound) as f32);
                v
            }
            Init::Zeros => zeroed(n, &what)?,
            Init::Ones => filled(n, 1.0, &what)?,
        };
        Ok(Tensor::from_vec(data, self.shape.as_slice(), device)?)
    }
}

/// One parameter of a model.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// Hugging Face tensor name.
    pub name: String,
    /// Shape as stored in the checkpoint.
    pub shape: Vec<usize>,
    /// Initialization for training from scratch.
    pub init: Init,
    /// Whether AdamW applies weight decay (matrices of projections only; not norms, biases or embeddings).
    pub decay: bool,
}

pub use super::family::{names, LayerNamer, Names};

/// Every parameter of the model described by `cfg`, in a fixed order (Hugging Face names of its
/// family).
pub fn param_specs(cfg: &TransformerConfig) -> Vec<ParamSpec> {
    param_specs_with(cfg, "", false)
}

/// Every parameter of `cfg`'s model with names under `prefix` (BERT task checkpoints store the
/// encoder under `bert.`), BERT's pooler included when `pooler`. Per block the order is the
/// forward pass's: a pre-norm block lists each norm before its sublayer, a post-norm block after.
/// Initialization: normal(`initializer_range`); a pre-norm decoder scales the projections that
/// write into the residual stream by 1/sqrt(2 layers) and its position table by 1/2 (GPT-2).
/// Weight decay only on projection matrices.
pub fn param_specs_with(cfg: &TransformerConfig, prefix: &str, pooler: bool) -> Vec<ParamSpec> {
    let n = names(cfg.arch, prefix);
    let (c, v, i_sz) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let std = cfg.initializer_range;
    let pre = cfg.norm_placement == NormPlacement::Pre;
    // GPT-2's scaled init for projections that write into the residual stream.
    let resid_std = if pre {
        std / (2.0 * cfg.num_layers as f64).sqrt()
    } else {
        std
    };
    let conv = n.conv1d;
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init, decay: bool| {
        out.push(ParamSpec {
            name,
            shape,
            init,
            decay,
        })
    };
    push(n.wte.clone(), vec![v, c], Init::Normal(std), false);
    if cfg.position == PositionKind::Learned {
        let s = if pre { std / 2.0 } else { std };
        push(
            n.wpe.clone(),
            vec![cfg.max_position_embeddings, c],
            Init::Normal(s),
            false,
        );
    }
    if let PositionKind::Relative { buckets, .. } = cfg.position {
        push(
            n.rel_bias.clone(),
            vec![buckets, cfg.num_heads],
            Init::Normal(std),
            false,
        );
    }
    if cfg.type_vocab_size > 0 {
        push(
            n.wtt.clone(),
            vec![cfg.type_vocab_size, c],
            Init::Normal(std),
            false,
        );
    }
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Init, bool), prefix: String| {
        push(format!("{prefix}.weight"), vec![c], Init::Ones, false);
        if cfg.norm == NormKind::LayerNorm {
            push(format!("{prefix}.bias"), vec![c], Init::Zeros, false);
        }
    };
    if cfg.embedding_norm {
        norm(&mut push, n.ln_emb.clone());
    }
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    for l in 0..cfg.num_layers {
        let name = |part: &str| (n.layer)(l, part);
        let linear = |push: &mut dyn FnMut(String, Vec<usize>, Init, bool),
                      part: &str,
                      i: usize,
                      o: usize,
                      s: f64| {
            let shape = if conv { vec![i, o] } else { vec![o, i] };
            push(
                format!("{}.weight", name(part)),
                shape,
                Init::Normal(s),
                true,
            );
            if cfg.bias {
                push(format!("{}.bias", name(part)), vec![o], Init::Zeros, false);
            }
        };
        if pre {
            norm(&mut push, name("ln1"));
        }
        if n.fused_qkv {
            linear(&mut push, "qkv", c, q + 2 * kv, std);
        } else {
            linear(&mut push, "q", c, q, std);
            linear(&mut push, "k", c, kv, std);
            linear(&mut push, "v", c, kv, std);
        }
        linear(&mut push, "o", q, c, resid_std);
        if !pre {
            norm(&mut push, name("ln1"));
        }
        if cfg.cross_attention {
            if pre {
                norm(&mut push, name("lnx"));
            }
            linear(&mut push, "xq", c, q, std);
            linear(&mut push, "xk", c, kv, std);
            linear(&mut push, "xv", c, kv, std);
            linear(&mut push, "xo", q, c, resid_std);
            if !pre {
                norm(&mut push, name("lnx"));
            }
        }
        if pre {
            norm(&mut push, name("ln2"));
        }
        if cfg.gated_mlp {
            linear(&mut push, "gate", c, i_sz, std);
            linear(&mut push, "up", c, i_sz, std);
            linear(&mut push, "down", i_sz, c, resid_std);
        } else {
            linear(&mut push, "fc", c, i_sz, std);
            linear(&mut push, "proj", i_sz, c, resid_std);
        }
        if !pre {
            norm(&mut push, name("ln2"));
        }
    }
    if pre {
        norm(&mut push, n.ln_f.clone());
    }
    if cfg.is_decoder() && !cfg.tie_word_embeddings {
        push(n.lm_head.clone(), vec![v, c], Init::Normal(std), true);
    }
    if pooler {
        push(
            format!("{}.weight", n.pooler),
            vec![c, c],
            Init::Normal(std),
            true,
        );
        push(format!("{}.bias", n.pooler), vec![c], Init::Zeros, false);
    }
    out
}

/// A model's trainable parameters, in [`param_specs`] order.
pub struct ParamStore {
    pub specs: Vec<ParamSpec>,
    pub vars: Vec<Var>,
}

impl ParamStore {
    /// Fresh parameters initialized from `rng`.
    pub fn init(
        cfg: &TransformerConfig,
        rng: &mut Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::init_specs(param_specs(cfg), rng, dtype, device)
    }

    /// Fresh parameters for `specs` (e.g. both stacks of an encoder-decoder) from `rng`.
    pub fn init_specs(
        specs: Vec<ParamSpec>,
        rng: &mut Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut vars = Vec::with_capacity(specs.len());
        for s in &specs {
            let t = s.init_tensor(rng, device)?.to_dtype(dtype)?;
            vars.push(Var::from_tensor(&t)?);
        }
        Ok(ParamStore { specs, vars })
    }

    /// Parameters from a map of tensors (shapes checked), made trainable.
    pub fn from_tensors(
        cfg: &TransformerConfig,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        path: &Path,
    ) -> Result<Self> {
        Self::from_tensors_specs(param_specs(cfg), tensors, dtype, path)
    }

    /// Parameters `specs` from a map of tensors (shapes checked), made trainable.
    pub fn from_tensors_specs(
        specs: Vec<ParamSpec>,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        path: &Path,
    ) -> Result<Self> {
        let mut vars = Vec::with_capacity(specs.len());
        for s in &specs {
            let t = fetch(tensors, &s.name, &s.shape, path)?;
            vars.push(Var::from_tensor(&t.to_dtype(dtype)?)?);
        }
        Ok(ParamStore { specs, vars })
    }

    /// Name -> tensor map sharing the variables' storage (gradients flow to the variables).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.specs
            .iter()
            .zip(&self.vars)
            .map(|(s, v)| (s.name.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Total number of scalars.
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }
}

/// Look up `name` in `tensors` and check its shape.
pub fn fetch(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Tensor> {
    let t = tensors
        .get(name)
        .ok_or_else(|| Error::checkpoint(path, format!("missing tensor '{name}'")))?;
    if t.dims() != shape {
        return Err(Error::checkpoint(
            path,
            format!(
                "tensor '{name}' has shape {:?}, expected {:?}",
                t.dims(),
                shape
            ),
        ));
    }
    Ok(t.clone())
}
