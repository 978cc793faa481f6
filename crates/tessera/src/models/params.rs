//! Parameter names, shapes and initialization, and the trainable store.
//!
//! Names are the Hugging Face checkpoint names of the model's family, so loading and saving is a
//! name lookup and a saved `model.safetensors` loads in transformers unchanged.

use super::config::{Arch, ModelConfig, NormKind, PositionKind};
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

/// Maps (layer index, part) to a tensor-name prefix.
pub type LayerNamer = Box<dyn Fn(usize, &str) -> String + Send + Sync>;

/// Tensor names for one family.
pub struct Names {
    pub wte: String,
    pub wpe: String,
    pub ln_f: String,
    pub lm_head: String,
    pub layer: LayerNamer,
}

/// Names of the tensors in `arch`'s checkpoints. Layer parts: ln1, ln2, qkv, q, k, v, o, fc, proj,
/// gate, up, down.
pub fn names(arch: Arch) -> Names {
    match arch {
        Arch::Gpt2 => Names {
            wte: "transformer.wte.weight".into(),
            wpe: "transformer.wpe.weight".into(),
            ln_f: "transformer.ln_f".into(),
            lm_head: "lm_head.weight".into(),
            layer: Box::new(|i, part| {
                let p = match part {
                    "ln1" => "ln_1",
                    "ln2" => "ln_2",
                    "qkv" => "attn.c_attn",
                    "o" => "attn.c_proj",
                    "fc" => "mlp.c_fc",
                    "proj" => "mlp.c_proj",
                    // Not used by canonical GPT-2 configs; kept unique for completeness.
                    other => other,
                };
                format!("transformer.h.{i}.{p}")
            }),
        },
        Arch::Llama => Names {
            wte: "model.embed_tokens.weight".into(),
            wpe: "model.embed_positions.weight".into(),
            ln_f: "model.norm".into(),
            lm_head: "lm_head.weight".into(),
            layer: Box::new(|i, part| {
                let p = match part {
                    "ln1" => "input_layernorm",
                    "ln2" => "post_attention_layernorm",
                    "q" => "self_attn.q_proj",
                    "k" => "self_attn.k_proj",
                    "v" => "self_attn.v_proj",
                    "o" => "self_attn.o_proj",
                    "gate" => "mlp.gate_proj",
                    "up" => "mlp.up_proj",
                    "down" => "mlp.down_proj",
                    "fc" => "mlp.fc",
                    "proj" => "mlp.proj",
                    other => other,
                };
                format!("model.layers.{i}.{p}")
            }),
        },
    }
}

/// GPT-2 stores projections as Conv1D (in, out); Llama as Linear (out, in).
pub fn conv1d_layout(arch: Arch) -> bool {
    arch == Arch::Gpt2
}

/// Every parameter of the model described by `cfg`, in a fixed order.
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let n = names(cfg.arch);
    let (c, v, i_sz) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let std = cfg.initializer_range;
    // GPT-2's scaled init for projections that write into the residual stream.
    let resid_std = std / (2.0 * cfg.num_layers as f64).sqrt();
    let conv = conv1d_layout(cfg.arch);
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
        push(
            n.wpe.clone(),
            vec![cfg.max_position_embeddings, c],
            Init::Normal(std / 2.0),
            false,
        );
    }
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Init, bool), prefix: String| {
        push(format!("{prefix}.weight"), vec![c], Init::Ones, false);
        if cfg.norm == NormKind::LayerNorm {
            push(format!("{prefix}.bias"), vec![c], Init::Zeros, false);
        }
    };
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
        norm(&mut push, name("ln1"));
        if cfg.arch == Arch::Gpt2 {
            linear(&mut push, "qkv", c, q + 2 * kv, std);
        } else {
            linear(&mut push, "q", c, q, std);
            linear(&mut push, "k", c, kv, std);
            linear(&mut push, "v", c, kv, std);
        }
        linear(&mut push, "o", q, c, resid_std);
        norm(&mut push, name("ln2"));
        if cfg.gated_mlp {
            linear(&mut push, "gate", c, i_sz, std);
            linear(&mut push, "up", c, i_sz, std);
            linear(&mut push, "down", i_sz, c, resid_std);
        } else {
            linear(&mut push, "fc", c, i_sz, std);
            linear(&mut push, "proj", i_sz, c, resid_std);
        }
    }
    norm(&mut push, n.ln_f.clone());
    if !cfg.tie_word_embeddings {
        push(n.lm_head.clone(), vec![v, c], Init::Normal(std), true);
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
    pub fn init(cfg: &ModelConfig, rng: &mut Rng, dtype: DType, device: &Device) -> Result<Self> {
        let specs = param_specs(cfg);
        let mut vars = Vec::with_capacity(specs.len());
        for s in &specs {
            let t = s.init_tensor(rng, device)?.to_dtype(dtype)?;
            vars.push(Var::from_tensor(&t)?);
        }
        Ok(ParamStore { specs, vars })
    }

    /// Parameters from a map of tensors (shapes checked), made trainable.
    pub fn from_tensors(
        cfg: &ModelConfig,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        path: &Path,
    ) -> Result<Self> {
        let specs = param_specs(cfg);
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
