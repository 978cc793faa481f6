//! LoRA adapters (Hu et al., 2021) in Hugging Face PEFT's layout.
//!
//! An adapted projection computes `y = x Wᵀ + s · (x Aᵀ) Bᵀ` with A (r, in) and B (out, r)
//! trained and W frozen; `s = alpha / r`. A starts uniform on ±1/√in (PEFT's Kaiming-uniform with
//! a = √5), B at zero, so training starts from the base model exactly.
//!
//! On disk (`adapter_config.json` + `adapter_model.safetensors`), tensors carry PEFT's names,
//! `base_model.model.<module>.lora_A.weight` / `lora_B.weight` with `<module>` the projection's
//! Hugging Face name (`model.layers.3.self_attn.q_proj`), so `peft.PeftModel.from_pretrained`
//! loads them onto the transformers model of the same base. `tessera_adapter.json` beside them
//! records the base's name and shape, checked before an adapter is applied (an adapter written
//! by PEFT has none: its tensor shapes are checked).

use super::config::TransformerConfig;
use super::family::names;
use super::params::{Init, ParamSpec, ParamStore};
use super::transformer::Transformer;
use crate::nn::Lora;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// tessera's record of the base model's name and shape (checked before applying the adapter).
pub const ADAPTER_BASE: &str = "tessera_adapter.json";

/// Projection parts an adapter may target (the names of [`super::family::LayerNamer`]).
const PARTS: &[&str] = &[
    "q", "k", "v", "o", "gate", "up", "down", "fc", "proj", "qkv",
];

/// Rank, scale and targets of the adapters.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Parts adapted in every block (`q`, `k`, `v`, `o`, `gate`, `up`, `down`, ...).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// Targets as users write them: `q,k,v,o,gate,up,down`, or PEFT's module names (`q_proj`);
    /// `all` = every projection of `cfg`'s blocks.
    pub fn new(
        rank: usize,
        alpha: f64,
        targets: &[String],
        cfg: &TransformerConfig,
    ) -> Result<Self> {
        if rank == 0 {
            return Err(Error::Config("LoRA rank must be at least 1".into()));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::Config(format!(
                "LoRA alpha must be positive, got {alpha}"
            )));
        }
        let available: Vec<&str> = PARTS
            .iter()
            .copied()
            .filter(|p| part_dims(cfg, p).is_some())
            .collect();
        let mut parts: Vec<String> = Vec::new();
        for t in targets {
            let t = t.trim();
            if t == "all" {
                parts.extend(available.iter().map(|p| p.to_string()));
                continue;
            }
            let part = available
                .iter()
                .find(|p| **p == t || module_of(cfg, 0, p).rsplit('.').next() == Some(t))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "unknown LoRA target '{t}' for a {:?} model (targets: {})",
                        cfg.arch,
                        available.join(", ")
                    ))
                })?;
            parts.push(part.to_string());
        }
        parts.dedup();
        let mut seen = std::collections::HashSet::new();
        parts.retain(|p| seen.insert(p.clone()));
        if parts.is_empty() {
            return Err(Error::Config("no LoRA targets".into()));
        }
        Ok(LoraConfig {
            rank,
            alpha,
            targets: parts,
        })
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// The adapter parameters (PEFT names): per block, per target, A (r, in) then B (out, r).
    pub fn specs(&self, cfg: &TransformerConfig) -> Result<Vec<ParamSpec>> {
        let mut out = Vec::new();
        for l in 0..cfg.num_layers {
            for part in &self.targets {
                let (o, i) = part_dims(cfg, part).ok_or_else(|| {
                    Error::Config(format!("a {:?} block has no '{part}' projection", cfg.arch))
                })?;
                let module = module_of(cfg, l, part);
                out.push(ParamSpec {
                    name: peft_name(&module, "A"),
                    shape: vec![self.rank, i],
                    init: Init::Uniform(1.0 / (i as f64).sqrt()),
                    decay: true,
                });
                out.push(ParamSpec {
                    name: peft_name(&module, "B"),
                    shape: vec![o, self.rank],
                    init: Init::Zeros,
                    decay: true,
                });
            }
        }
        Ok(out)
    }

    /// PEFT's `target_modules`: the last component of each target's module name.
    pub fn target_modules(&self, cfg: &TransformerConfig) -> Vec<String> {
        self.targets
            .iter()
            .map(|p| {
                module_of(cfg, 0, p)
                    .rsplit('.')
                    .next()
                    .unwrap_or(p)
                    .to_string()
            })
            .collect()
    }
}

/// The Hugging Face module name of projection `part` in block `layer`.
pub fn module_of(cfg: &TransformerConfig, layer: usize, part: &str) -> String {
    (names(cfg.arch, "").layer)(layer, part)
}

/// PEFT's tensor name of A or B (`ab`) of `module`.
pub fn peft_name(module: &str, ab: &str) -> String {
    format!("base_model.model.{module}.lora_{ab}.weight")
}

/// (out, in) of projection `part` in `cfg`'s blocks, if they have it.
fn part_dims(cfg: &TransformerConfig, part: &str) -> Option<(usize, usize)> {
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let n = names(cfg.arch, "");
    Some(match part {
        "q" if !n.fused_qkv => (q, c),
        "k" | "v" if !n.fused_qkv => (kv, c),
        "qkv" if n.fused_qkv => (q + 2 * kv, c),
        "o" => (c, q),
        "gate" | "up" if cfg.gated_mlp => (i, c),
        "down" if cfg.gated_mlp => (c, i),
        "fc" if !cfg.gated_mlp => (i, c),
        "proj" if !cfg.gated_mlp => (c, i),
        _ => return None,
    })
}

/// The shape of the base model an adapter was trained on, and its name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseId {
    /// The model as the user named it (a known name or a file name).
    pub name: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
}

impl BaseId {
    pub fn of(name: &str, cfg: &TransformerConfig) -> Self {
        BaseId {
            name: name.to_string(),
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            intermediate_size: cfg.intermediate_size,
            vocab_size: cfg.vocab_size,
        }
    }

    /// Whether a model of this shape can take the adapter (names may differ: a path and a known
    /// name can be one model).
    fn same_shape(&self, other: &BaseId) -> bool {
        BaseId {
            name: String::new(),
            ..self.clone()
        } == BaseId {
            name: String::new(),
            ..other.clone()
        }
    }
}

/// Attach adapters (tensors under PEFT names, e.g. a [`ParamStore`]'s) to every targeted
/// projection of `model`.
pub fn attach(
    model: &mut Transformer,
    lora: &LoraConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let cfg = model.cfg.clone();
    for l in 0..cfg.num_layers {
        for part in &lora.targets {
            let module = module_of(&cfg, l, part);
            let get = |ab: &str| {
                let name = peft_name(&module, ab);
                tensors
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| Error::Input(format!("adapter tensor '{name}' is missing")))
            };
            let (a, b) = (get("A")?, get("B")?);
            let lin = model
                .linear_mut(l, part)
                .ok_or_else(|| Error::Config(format!("block {l} has no '{part}' projection")))?;
            let (o, i) = lin.dims()?;
            if a.dims() != [lora.rank, i] || b.dims() != [o, lora.rank] {
                return Err(Error::Input(format!(
                    "adapter of {module}: A {:?} and B {:?} do not fit a {o}x{i} projection at rank {}",
                    a.dims(),
                    b.dims(),
                    lora.rank
                )));
            }
            *lin = lin.clone().with_lora(Lora {
                a,
                b,
                scale: lora.scale(),
            });
        }
    }
    Ok(())
}

/// A trained adapter as read from (or written to) its directory.
pub struct Adapter {
    pub lora: LoraConfig,
    pub base: BaseId,
    /// PEFT name -> tensor (f32, CPU).
    pub tensors: HashMap<String, Tensor>,
}

impl Adapter {
    /// The adapter of a run's `params` (PEFT names).
    pub fn from_params(lora: &LoraConfig, base: BaseId, params: &ParamStore) -> Self {
        Adapter {
            lora: lora.clone(),
            base,
            tensors: params.tensors(),
        }
    }

    /// Write `adapter_config.json` and `adapter_model.safetensors` into `dir` (created).
    pub fn save(&self, dir: &Path, cfg: &TransformerConfig) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.base.name,
            "r": self.lora.rank,
            "lora_alpha": self.lora.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.lora.target_modules(cfg),
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "layers_to_transform": null,
            "revision": null,
        });
        crate::util::fs::write_atomic(
            &dir.join(ADAPTER_CONFIG),
            serde_json::to_string_pretty(&config)?.as_bytes(),
        )?;
        // The base's shape beside PEFT's config (PEFT warns about keys it does not know).
        crate::util::fs::write_atomic(
            &dir.join(ADAPTER_BASE),
            serde_json::to_string_pretty(&json!({ "base": self.base }))?.as_bytes(),
        )?;
        let mut named: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let bytes = crate::weights::safetensors::safetensors_bytes(&named)?;
        crate::util::fs::write_atomic(&dir.join(ADAPTER_WEIGHTS), &bytes)?;
        Ok(())
    }

    /// Read an adapter directory written by tessera or PEFT (a LoRA on a tessera-known
    /// architecture; `cfg` is the base it will be applied to, whose shape must match).
    pub fn load(dir: &Path, base_name: &str, cfg: &TransformerConfig) -> Result<Self> {
        let cpath = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cpath).map_err(|e| {
            Error::Input(format!(
                "{}: cannot read the adapter config: {e}",
                cpath.display()
            ))
        })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Input(format!("{}: {e}", cpath.display())))?;
        let bad = |m: String| Error::Input(format!("{}: {m}", cpath.display()));
        if v["peft_type"].as_str().is_some_and(|t| t != "LORA") {
            return Err(bad(format!("peft_type {} is not LORA", v["peft_type"])));
        }
        let rank = v["r"].as_u64().ok_or_else(|| bad("missing 'r'".into()))? as usize;
        let alpha = v["lora_alpha"]
            .as_f64()
            .ok_or_else(|| bad("missing 'lora_alpha'".into()))?;
        if v["use_rslora"].as_bool() == Some(true) || v["use_dora"].as_bool() == Some(true) {
            return Err(bad("rsLoRA and DoRA adapters are not supported".into()));
        }
        let targets: Vec<String> = match v["target_modules"].as_array() {
            Some(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            None => return Err(bad("missing 'target_modules' (a list)".into())),
        };
        let want = BaseId::of(base_name, cfg);
        let bpath = dir.join(ADAPTER_BASE);
        let recorded: Option<Value> = if bpath.is_file() {
            let text = std::fs::read_to_string(&bpath).map_err(|e| Error::io(&bpath, e))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::Input(format!("{}: {e}", bpath.display())))?;
            Some(v["base"].clone())
        } else {
            None
        };
        let base: BaseId = match recorded {
            Some(b) => serde_json::from_value(b)
                .map_err(|e| Error::Input(format!("{}: base: {e}", bpath.display())))?,
            None => BaseId {
                name: v["base_model_name_or_path"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                ..want.clone()
            },
        };
        if !base.same_shape(&want) {
            return Err(Error::Input(format!(
                "adapter {} was trained on '{}' ({} layers, hidden {}, vocab {}), which does not \
                 match the model '{}' ({} layers, hidden {}, vocab {})",
                dir.display(),
                base.name,
                base.num_layers,
                base.hidden_size,
                base.vocab_size,
                want.name,
                want.num_layers,
                want.hidden_size,
                want.vocab_size
            )));
        }
        let lora = LoraConfig::new(rank, alpha, &targets, cfg).map_err(|e| bad(e.to_string()))?;
        let wpath = dir.join(ADAPTER_WEIGHTS);
        let tensors = crate::weights::safetensors::load_safetensors(&wpath, &Device::Cpu)?;
        let mut out = HashMap::new();
        for s in lora.specs(cfg)? {
            // PEFT may save names with the adapter name inside (`lora_A.default.weight`).
            let alt = s.name.replace(".weight", ".default.weight");
            let t = tensors
                .get(&s.name)
                .or_else(|| tensors.get(&alt))
                .ok_or_else(|| {
                    Error::Input(format!("{}: missing tensor '{}'", wpath.display(), s.name))
                })?;
            if t.dims() != s.shape.as_slice() {
                return Err(Error::Input(format!(
                    "{}: tensor '{}' has shape {:?}, expected {:?}",
                    wpath.display(),
                    s.name,
                    t.dims(),
                    s.shape
                )));
            }
            out.insert(s.name, t.to_dtype(candle_core::DType::F32)?);
        }
        Ok(Adapter {
            lora,
            base,
            tensors: out,
        })
    }

    /// `scale · B A` (out, in) row-major for projection `part` of block `layer`, if adapted.
    pub fn delta(
        &self,
        cfg: &TransformerConfig,
        layer: usize,
        part: &str,
    ) -> Result<Option<Vec<f32>>> {
        if !self.lora.targets.iter().any(|t| t == part) {
            return Ok(None);
        }
        let module = module_of(cfg, layer, part);
        let get = |ab: &str| -> Result<(Vec<f32>, usize, usize)> {
            let name = peft_name(&module, ab);
            let t = self
                .tensors
                .get(&name)
                .ok_or_else(|| Error::Input(format!("adapter tensor '{name}' is missing")))?;
            let (r, c) = t.dims2()?;
            Ok((t.flatten_all()?.to_vec1::<f32>()?, r, c))
        };
        let (a, r, i) = get("A")?;
        let (b, o, _) = get("B")?;
        let s = self.lora.scale() as f32;
        let mut d = vec![0f32; o * i];
        for (row, brow) in d.chunks_exact_mut(i).zip(b.chunks_exact(r)) {
            for (k, &bk) in brow.iter().enumerate() {
                let f = s * bk;
                if f != 0.0 {
                    for (x, &ak) in row.iter_mut().zip(&a[k * i..(k + 1) * i]) {
                        *x += f * ak;
                    }
                }
            }
        }
        Ok(Some(d))
    }
}
