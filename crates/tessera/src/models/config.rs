//! Model configuration with Hugging Face `config.json` names.
//!
//! One internal [`ModelConfig`] describes every decoder tessera builds; it is read from and written
//! to the `config.json` of the matching Hugging Face family (`gpt2` or `llama`), so a saved model
//! loads in transformers as `GPT2LMHeadModel` or `LlamaForCausalLM`.

use crate::{Error, Result};
use serde_json::{json, Map, Value};

/// The checkpoint family: decides tensor names and the `config.json` dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// GPT-2: learned positions, LayerNorm, GELU MLP, biases, fused QKV stored as Conv1D.
    Gpt2,
    /// Llama: rotary positions, RMSNorm, gated MLP, no biases, grouped-query attention.
    Llama,
}

/// Normalization kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm with weight only.
    RmsNorm,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PositionKind {
    /// A learned table added to the token embedding.
    Learned,
    /// Rotary embedding of queries and keys (half-split layout, as Hugging Face Llama).
    Rotary { theta: f64 },
}

pub use crate::kernels::activation::Activation;

/// Everything that defines a decoder-only Transformer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Checkpoint family (tensor names, config dialect).
    pub arch: Arch,
    /// V: vocabulary size.
    pub vocab_size: usize,
    /// C: hidden width.
    pub hidden_size: usize,
    /// Number of Transformer blocks.
    pub num_layers: usize,
    /// H: query heads.
    pub num_heads: usize,
    /// Hkv: key/value heads (= H for multi-head, < H for grouped-query attention).
    pub num_kv_heads: usize,
    /// D: per-head width (C / H unless the config says otherwise).
    pub head_dim: usize,
    /// I: MLP inner width.
    pub intermediate_size: usize,
    /// Longest sequence the model accepts (size of the learned position table / rotary cache).
    pub max_position_embeddings: usize,
    /// Normalization kind (placement is always pre-norm).
    pub norm: NormKind,
    /// Epsilon inside the norms.
    pub norm_eps: f64,
    /// Position encoding.
    pub position: PositionKind,
    /// MLP activation.
    pub activation: Activation,
    /// Gated MLP (`down(act(gate(x)) * up(x))`) instead of `proj(act(fc(x)))`.
    pub gated_mlp: bool,
    /// Biases in attention and MLP projections.
    pub bias: bool,
    /// LM head shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Dropout on embeddings, residual branches and attention weights during training.
    pub dropout: f32,
    /// Standard deviation of the normal weight init.
    pub initializer_range: f64,
    /// Beginning-of-sequence token id, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, if any.
    pub eos_token_id: Option<u32>,
}

fn get_usize(obj: &Map<String, Value>, keys: &[&str]) -> Result<Option<usize>> {
    for k in keys {
        match obj.get(*k) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                    Error::Config(format!("'{k}' must be a non-negative integer, got {v}"))
                })
            }
        }
    }
    Ok(None)
}

fn need_usize(obj: &Map<String, Value>, keys: &[&str]) -> Result<usize> {
    get_usize(obj, keys)?.ok_or_else(|| Error::Config(format!("missing '{}'", keys[0])))
}

fn get_f64(obj: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| Error::Config(format!("'{key}' must be a number, got {v}"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| Error::Config(format!("'{key}' must be true or false, got {v}"))),
    }
}

fn get_token_id(obj: &Map<String, Value>, key: &str) -> Option<u32> {
    match obj.get(key)? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        // Some configs list several EOS ids; the first is the canonical one.
        Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
        _ => None,
    }
}

/// Llama's rotary base: top-level `rope_theta` (transformers 4), else `rope_parameters.rope_theta`
/// (transformers 5 writes it there), else 10000. Scaled variants (`rope_type` other than
/// `default`, or a `rope_scaling`) are refused rather than silently run unscaled.
fn rope_theta(obj: &Map<String, Value>) -> Result<f64> {
    let params = obj.get("rope_parameters").and_then(Value::as_object);
    for scaling in [
        obj.get("rope_scaling"),
        params.and_then(|p| p.get("rope_type")),
    ]
    .into_iter()
    .flatten()
    {
        let kind = match scaling {
            Value::Null => continue,
            Value::Object(o) => o.get("rope_type").or_else(|| o.get("type")),
            v => Some(v),
        };
        match kind.and_then(Value::as_str) {
            None | Some("default") => {}
            Some(other) => {
                return Err(Error::Config(format!(
                    "rotary scaling '{other}' is not supported (only the default rotary embedding)"
                )))
            }
        }
    }
    match (obj.get("rope_theta"), params) {
        (Some(v), _) if !v.is_null() => get_f64(obj, "rope_theta", 10000.0),
        (_, Some(p)) => get_f64(p, "rope_theta", 10000.0),
        _ => Ok(10000.0),
    }
}

impl ModelConfig {
    /// Parse a Hugging Face `config.json` value (`model_type` `gpt2` or `llama`).
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Config("config.json must be a JSON object".into()))?;
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::Config("missing 'model_type' (expected \"gpt2\" or \"llama\")".into())
            })?;
        let cfg = match model_type {
            "gpt2" => {
                let hidden = need_usize(obj, &["n_embd", "hidden_size"])?;
                let heads = need_usize(obj, &["n_head", "num_attention_heads"])?;
                let act = obj
                    .get("activation_function")
                    .and_then(Value::as_str)
                    .unwrap_or("gelu_new");
                let pdrop = get_f64(obj, "resid_pdrop", 0.0)? as f32;
                ModelConfig {
                    arch: Arch::Gpt2,
                    vocab_size: need_usize(obj, &["vocab_size"])?,
                    hidden_size: hidden,
                    num_layers: need_usize(obj, &["n_layer", "num_hidden_layers"])?,
                    num_heads: heads,
                    num_kv_heads: heads,
                    head_dim: hidden.checked_div(heads).unwrap_or(0),
                    intermediate_size: get_usize(obj, &["n_inner"])?.unwrap_or(4 * hidden),
                    max_position_embeddings: need_usize(
                        obj,
                        &["n_positions", "max_position_embeddings"],
                    )?,
                    norm: NormKind::LayerNorm,
                    norm_eps: get_f64(obj, "layer_norm_epsilon", 1e-5)?,
                    position: PositionKind::Learned,
                    activation: Activation::parse(act)?,
                    gated_mlp: false,
                    bias: true,
                    tie_word_embeddings: get_bool(obj, "tie_word_embeddings", true)?,
                    dropout: pdrop,
                    initializer_range: get_f64(obj, "initializer_range", 0.02)?,
                    bos_token_id: get_token_id(obj, "bos_token_id"),
                    eos_token_id: get_token_id(obj, "eos_token_id"),
                }
            }
            "llama" => {
                let hidden = need_usize(obj, &["hidden_size"])?;
                let heads = need_usize(obj, &["num_attention_heads"])?;
                let act = obj
                    .get("hidden_act")
                    .and_then(Value::as_str)
                    .unwrap_or("silu");
                let attn_bias = get_bool(obj, "attention_bias", false)?;
                let mlp_bias = get_bool(obj, "mlp_bias", false)?;
                if attn_bias != mlp_bias {
                    return Err(Error::Config(
                        "attention_bias and mlp_bias must be equal (mixed biases are not supported)".into(),
                    ));
                }
                ModelConfig {
                    arch: Arch::Llama,
                    vocab_size: need_usize(obj, &["vocab_size"])?,
                    hidden_size: hidden,
                    num_layers: need_usize(obj, &["num_hidden_layers"])?,
                    num_heads: heads,
                    num_kv_heads: get_usize(obj, &["num_key_value_heads"])?.unwrap_or(heads),
                    head_dim: get_usize(obj, &["head_dim"])?
                        .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
                    intermediate_size: need_usize(obj, &["intermediate_size"])?,
                    max_position_embeddings: need_usize(obj, &["max_position_embeddings"])?,
                    norm: NormKind::RmsNorm,
                    norm_eps: get_f64(obj, "rms_norm_eps", 1e-6)?,
                    position: PositionKind::Rotary {
                        theta: rope_theta(obj)?,
                    },
                    activation: Activation::parse(act)?,
                    gated_mlp: true,
                    bias: attn_bias,
                    tie_word_embeddings: get_bool(obj, "tie_word_embeddings", false)?,
                    dropout: get_f64(obj, "attention_dropout", 0.0)? as f32,
                    initializer_range: get_f64(obj, "initializer_range", 0.02)?,
                    bos_token_id: get_token_id(obj, "bos_token_id"),
                    eos_token_id: get_token_id(obj, "eos_token_id"),
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "unsupported model_type '{other}' (expected \"gpt2\" or \"llama\")"
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a `config.json` file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::error::read_text(path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::from_hf_json(&v).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Check that the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        use super::limits::{self as lim, check};
        let bad = |m: String| Err(Error::Config(m));
        check("vocab_size", self.vocab_size, lim::MAX_VOCAB)?;
        check("hidden_size", self.hidden_size, lim::MAX_HIDDEN)?;
        check("num_hidden_layers", self.num_layers, lim::MAX_LAYERS)?;
        check("num_attention_heads", self.num_heads, lim::MAX_HEADS)?;
        check("num_key_value_heads", self.num_kv_heads, lim::MAX_HEADS)?;
        check("head_dim", self.head_dim, lim::MAX_HEAD_DIM)?;
        check(
            "intermediate_size",
            self.intermediate_size,
            lim::MAX_INTERMEDIATE,
        )?;
        check(
            "max_position_embeddings",
            self.max_position_embeddings,
            lim::MAX_CONTEXT,
        )?;
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return bad("vocab_size, hidden size and number of layers must be positive".into());
        }
        if self.num_heads == 0 || self.num_kv_heads == 0 {
            return bad("the number of attention heads must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_heads)
            && self.head_dim * self.num_heads != self.hidden_size
        {
            return bad(format!(
                "hidden size {} is not divisible by the number of heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 {
            return bad("head_dim must be positive".into());
        }
        if matches!(self.position, PositionKind::Rotary { .. }) && !self.head_dim.is_multiple_of(2)
        {
            return bad(format!(
                "rotary positions need an even head size, got {}",
                self.head_dim
            ));
        }
        if self.intermediate_size == 0 || self.max_position_embeddings == 0 {
            return bad("intermediate size and max positions must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.norm_eps <= 0.0 {
            return bad("norm epsilon must be positive".into());
        }
        Ok(())
    }

    /// The Hugging Face `config.json` for this model.
    pub fn to_hf_json(&self) -> Value {
        let mut v = match self.arch {
            Arch::Gpt2 => json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": self.vocab_size,
                "n_embd": self.hidden_size,
                "n_layer": self.num_layers,
                "n_head": self.num_heads,
                "n_inner": self.intermediate_size,
                "n_positions": self.max_position_embeddings,
                "n_ctx": self.max_position_embeddings,
                "activation_function": self.activation.hf_name(),
                "layer_norm_epsilon": self.norm_eps,
                "resid_pdrop": self.dropout,
                "embd_pdrop": self.dropout,
                "attn_pdrop": self.dropout,
                "tie_word_embeddings": self.tie_word_embeddings,
                "initializer_range": self.initializer_range,
                "scale_attn_weights": true,
            }),
            Arch::Llama => {
                let theta = match self.position {
                    PositionKind::Rotary { theta } => theta,
                    PositionKind::Learned => 10000.0,
                };
                json!({
                    "architectures": ["LlamaForCausalLM"],
                    "model_type": "llama",
                    "vocab_size": self.vocab_size,
                    "hidden_size": self.hidden_size,
                    "num_hidden_layers": self.num_layers,
                    "num_attention_heads": self.num_heads,
                    "num_key_value_heads": self.num_kv_heads,
                    "head_dim": self.head_dim,
                    "intermediate_size": self.intermediate_size,
                    "max_position_embeddings": self.max_position_embeddings,
                    "hidden_act": self.activation.hf_name(),
                    "rms_norm_eps": self.norm_eps,
                    "rope_theta": theta,
                    "attention_bias": self.bias,
                    "mlp_bias": self.bias,
                    "attention_dropout": self.dropout,
                    "tie_word_embeddings": self.tie_word_embeddings,
                    "initializer_range": self.initializer_range,
                })
            }
        };
        let obj = v.as_object_mut().expect("object");
        obj.insert("torch_dtype".into(), json!("float32"));
        if let Some(b) = self.bos_token_id {
            obj.insert("bos_token_id".into(), json!(b));
        }
        if let Some(e) = self.eos_token_id {
            obj.insert("eos_token_id".into(), json!(e));
        }
        v
    }

    /// Number of trainable parameters (tied head counted once).
    pub fn num_params(&self) -> usize {
        let c = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let b = usize::from(self.bias);
        let norm = if self.norm == NormKind::LayerNorm {
            2 * c
        } else {
            c
        };
        let attn = c * (q + 2 * kv) + b * (q + 2 * kv) + q * c + b * c;
        let mlp = if self.gated_mlp {
            3 * c * self.intermediate_size + b * (2 * self.intermediate_size + c)
        } else {
            2 * c * self.intermediate_size + b * (self.intermediate_size + c)
        };
        let pos = if self.position == PositionKind::Learned {
            self.max_position_embeddings * c
        } else {
            0
        };
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * c
        };
        self.vocab_size * c + pos + self.num_layers * (attn + mlp + 2 * norm) + norm + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_json() -> Value {
        json!({"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 4,
               "n_positions": 64, "activation_function": "gelu_new"})
    }

    #[test]
    fn gpt2_roundtrip() {
        let c = ModelConfig::from_hf_json(&gpt2_json()).unwrap();
        assert_eq!(c.intermediate_size, 128);
        assert_eq!(c.head_dim, 8);
        assert!(c.tie_word_embeddings);
        let c2 = ModelConfig::from_hf_json(&c.to_hf_json()).unwrap();
        assert_eq!(c, c2);
    }

    #[test]
    fn llama_roundtrip_gqa() {
        let v = json!({"model_type": "llama", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
                       "max_position_embeddings": 64, "rope_theta": 500000.0});
        let c = ModelConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.num_kv_heads, 2);
        assert_eq!(c.position, PositionKind::Rotary { theta: 500000.0 });
        assert_eq!(ModelConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
    }

    #[test]
    fn rope_theta_from_transformers_5_rope_parameters() {
        let base = json!({"model_type": "llama", "vocab_size": 100, "hidden_size": 32,
                          "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                          "max_position_embeddings": 64});
        let theta = |v: &Value| match ModelConfig::from_hf_json(v).unwrap().position {
            PositionKind::Rotary { theta } => theta,
            p => panic!("{p:?}"),
        };
        assert_eq!(theta(&base), 10000.0);
        let mut v = base.clone();
        v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 100000.0});
        assert_eq!(theta(&v), 100000.0);
        v["rope_theta"] = json!(500000.0);
        assert_eq!(theta(&v), 500000.0);
        let mut v = base.clone();
        v["rope_parameters"] =
            json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0});
        let e = ModelConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("rotary scaling 'llama3'"), "{e}");
        let mut v = base;
        v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        assert!(ModelConfig::from_hf_json(&v).is_err());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let mut v = gpt2_json();
        v["n_head"] = json!(5);
        let e = ModelConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("not divisible"), "{e}");
        let mut v = gpt2_json();
        v["activation_function"] = json!("wiggle");
        let e = ModelConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("unknown activation 'wiggle'"), "{e}");
        let e = ModelConfig::from_hf_json(&json!({"model_type": "bert"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported model_type"), "{e}");
        let mut v = gpt2_json();
        v["n_layer"] = json!(-1);
        assert!(ModelConfig::from_hf_json(&v).is_err());
        let mut v = gpt2_json();
        v["resid_pdrop"] = json!(1.5);
        assert!(ModelConfig::from_hf_json(&v)
            .unwrap_err()
            .to_string()
            .contains("dropout"));
    }

    #[test]
    fn param_count_gpt2_small_shape() {
        // GPT-2 small: 124,439,808 parameters with a tied head.
        let v = json!({"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12,
                       "n_head": 12, "n_positions": 1024});
        assert_eq!(
            ModelConfig::from_hf_json(&v).unwrap().num_params(),
            124_439_808
        );
    }
}
