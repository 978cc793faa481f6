//! One configuration for every Transformer tessera builds.
//!
//! [`TransformerConfig`] is the shape of the one model ([`super::Transformer`]): norm placement
//! and kind, attention visibility, an optional cross-attention slot, positions, MHA/GQA, the MLP,
//! the head. It is serde-derived (tessera's own dialect, `tessera_config.json`), and it is read
//! from and written to the `config.json` of the matching Hugging Face family (GPT-2, Llama, BERT):
//! the raw file is deserialized into [`HfConfig`] (every Hugging Face field name these families
//! use, all optional) and a family file in [`super::family`] maps it into the one shape. A saved
//! model loads in transformers as `GPT2LMHeadModel`, `LlamaForCausalLM` or `BertModel`.

use super::block::NormPlacement;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The checkpoint family: decides tensor names and the `config.json` dialect (not the forward
/// pass, which the other fields describe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// GPT-2: learned positions, LayerNorm, GELU MLP, biases, fused QKV stored as Conv1D.
    Gpt2,
    /// Llama: rotary positions, RMSNorm, gated MLP, no biases, grouped-query attention.
    Llama,
    /// BERT: post-norm encoder, learned positions and token types, embedding LayerNorm.
    Bert,
    /// Marian (`MarianMTModel`): one stack of a post-norm encoder-decoder (the encoder's, or the
    /// decoder's with the cross-attention slot), sinusoidal positions, scaled embeddings shared
    /// by both stacks and the head. See [`crate::models::seq2seq`].
    Marian,
    /// T5 (`T5ForConditionalGeneration`): one stack of a pre-norm encoder-decoder with RMSNorm
    /// (T5's "layer norm"), no biases, unscaled attention, a bucketed relative position bias
    /// shared by the stack's blocks, a ReLU or gated-GELU MLP, embeddings shared by both stacks.
    T5,
}

/// Normalization kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm with weight only.
    RmsNorm,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PositionKind {
    /// A learned table added to the token embedding.
    Learned,
    /// Rotary embedding of queries and keys (half-split layout, as Hugging Face Llama).
    Rotary { theta: f64 },
    /// A fixed sine/cosine table added to the token embedding (Vaswani et al.; the half-split
    /// layout Marian uses: sines in the first C/2 columns, cosines in the last).
    Sinusoidal,
    /// A learned bias per head added to the attention scores, indexed by the bucket of the
    /// key's offset from the query (T5): `buckets` buckets, exact for small offsets and
    /// logarithmic up to `max_distance`; signed offsets in a bidirectional stack, only the past in
    /// a causal one. One (buckets, H) table per stack, shared by its blocks. See
    /// [`crate::nn::position::relative_bucket`].
    Relative { buckets: usize, max_distance: usize },
}

/// Which keys a query of the self-attention sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Earlier positions and itself (decoders).
    Causal,
    /// Every real token of the sequence (encoders; padding masked).
    Bidirectional,
}

pub use crate::kernels::activation::Activation;

/// Everything that defines a Transformer: GPT-2, Llama and BERT are values of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
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
    /// Longest sequence the model accepts (size of the position table / rotary cache).
    pub max_position_embeddings: usize,
    /// Token-type (segment) embeddings; 0 = none.
    #[serde(default)]
    pub type_vocab_size: usize,
    /// Normalization kind.
    pub norm: NormKind,
    /// Where each block normalizes: pre (decoders; a final norm ends the model) or post (BERT).
    pub norm_placement: NormPlacement,
    /// Epsilon inside the norms.
    pub norm_eps: f64,
    /// A norm over the summed embeddings (BERT).
    #[serde(default)]
    pub embedding_norm: bool,
    /// Token embeddings multiplied by sqrt(hidden_size) before positions are added (Marian's
    /// `scale_embedding`, Vaswani et al.).
    #[serde(default)]
    pub scale_embedding: bool,
    /// Self-attention visibility.
    pub attention: AttentionKind,
    /// Factor on the attention scores q·k; none = 1/sqrt(head_dim). T5 uses 1 (its scale is
    /// folded into the query weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_scale: Option<f64>,
    /// A cross-attention slot in every block (the decoder of an encoder-decoder).
    #[serde(default)]
    pub cross_attention: bool,
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
    /// Dropout on embeddings and residual branches while training.
    #[serde(default)]
    pub dropout: f32,
    /// Dropout on attention weights while training.
    #[serde(default)]
    pub attention_dropout: f32,
    /// Standard deviation of the normal weight init.
    pub initializer_range: f64,
    /// Beginning-of-sequence token id, if any.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, if any.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Padding token id, if any.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

/// A Hugging Face `config.json` as written: every field name the supported families use, all
/// optional (a family file decides defaults and which are required). Unknown fields are ignored,
/// as transformers ignores them.
#[derive(Debug, Default, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub n_embd: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub n_layer: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub n_head: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub n_inner: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub n_positions: Option<usize>,
    pub type_vocab_size: Option<usize>,
    pub layer_norm_epsilon: Option<f64>,
    pub layer_norm_eps: Option<f64>,
    pub rms_norm_eps: Option<f64>,
    pub activation_function: Option<String>,
    pub hidden_act: Option<String>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub tie_word_embeddings: Option<bool>,
    pub resid_pdrop: Option<f64>,
    pub embd_pdrop: Option<f64>,
    pub attn_pdrop: Option<f64>,
    pub attention_dropout: Option<f64>,
    pub hidden_dropout_prob: Option<f64>,
    pub attention_probs_dropout_prob: Option<f64>,
    pub initializer_range: Option<f64>,
    pub position_embedding_type: Option<String>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    // Encoder-decoder (Marian) fields.
    pub d_model: Option<usize>,
    pub encoder_layers: Option<usize>,
    pub decoder_layers: Option<usize>,
    pub encoder_attention_heads: Option<usize>,
    pub decoder_attention_heads: Option<usize>,
    pub encoder_ffn_dim: Option<usize>,
    pub decoder_ffn_dim: Option<usize>,
    pub decoder_vocab_size: Option<usize>,
    pub scale_embedding: Option<bool>,
    pub share_encoder_decoder_embeddings: Option<bool>,
    pub dropout: Option<f64>,
    pub activation_dropout: Option<f64>,
    pub init_std: Option<f64>,
    pub normalize_before: Option<bool>,
    pub add_final_layer_norm: Option<bool>,
    pub layernorm_embedding: Option<bool>,
    pub static_position_embeddings: Option<bool>,
    // T5 fields.
    pub d_kv: Option<usize>,
    pub d_ff: Option<usize>,
    pub num_layers: Option<usize>,
    pub num_decoder_layers: Option<usize>,
    pub num_heads: Option<usize>,
    pub relative_attention_num_buckets: Option<usize>,
    pub relative_attention_max_distance: Option<usize>,
    pub feed_forward_proj: Option<String>,
    pub dropout_rate: Option<f64>,
    pub initializer_factor: Option<f64>,
    pub scale_decoder_outputs: Option<bool>,
    pub decoder_start_token_id: Option<Value>,
    pub forced_eos_token_id: Option<Value>,
    /// Token ids are read leniently (a number, or a list whose first entry is canonical).
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
    pub pad_token_id: Option<Value>,
}

impl HfConfig {
    /// Deserialize, naming the field in type errors (`'hidden_size' must be a non-negative
    /// integer (invalid type: string "wide")`).
    pub fn parse(v: &Value) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::Config("config.json must be a JSON object".into()));
        }
        serde_path_to_error::deserialize(v).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner().to_string();
            let (what, expected) = match inner.rsplit_once(", expected ") {
                Some((what, expected)) => (what.to_string(), expected.to_string()),
                None => (inner.clone(), String::new()),
            };
            let need = match expected.as_str() {
                "usize" | "u64" | "u32" => "must be a non-negative integer",
                "f64" | "f32" => "must be a number",
                "a boolean" => "must be true or false",
                "a string" => "must be a string",
                _ => return Error::Config(format!("'{field}': {inner}")),
            };
            Error::Config(format!("'{field}' {need} ({what})"))
        })
    }

    /// The first of `values` that is set, or an error naming `name`.
    pub fn need(name: &str, values: &[Option<usize>]) -> Result<usize> {
        values
            .iter()
            .find_map(|v| *v)
            .ok_or_else(|| Error::Config(format!("missing '{name}'")))
    }

    /// A token id field: a number, or a list (its first entry); anything else is no id.
    pub fn token_id(v: &Option<Value>) -> Option<u32> {
        match v.as_ref()? {
            Value::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
            Value::Array(a) => a.first()?.as_u64().and_then(|x| u32::try_from(x).ok()),
            _ => None,
        }
    }
}

/// Read a JSON config file and `parse` it; errors name the file.
pub fn read_config_file<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&Value) -> Result<T>,
) -> Result<T> {
    let text = crate::error::read_text(path)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    parse(&v).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
        e => e,
    })
}

impl TransformerConfig {
    /// Parse a Hugging Face `config.json` value (`model_type` `gpt2`, `llama` or `bert`), or
    /// tessera's own serialized config (an object with `"arch"` and no `model_type`).
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        if v.get("model_type").is_none() && v.get("arch").is_some() {
            let cfg: TransformerConfig = serde_path_to_error::deserialize(v)
                .map_err(|e| Error::Config(format!("tessera config: {e}")))?;
            cfg.validate()?;
            return Ok(cfg);
        }
        let hf = HfConfig::parse(v)?;
        let cfg = match hf.model_type.as_deref() {
            Some("gpt2") => super::family::gpt2::config(&hf)?,
            Some("llama") => super::family::llama::config(&hf)?,
            Some("bert") => super::family::bert::config(&hf)?,
            Some(m @ ("marian" | "t5")) => {
                return Err(Error::Config(format!(
                    "model_type '{m}' is an encoder-decoder: it loads as a Seq2Seq model \
                     (tessera translate / summarize), not as one stack"
                )))
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "unsupported model_type '{other}' (expected \"gpt2\", \"llama\" or \"bert\")"
                )))
            }
            None => {
                return Err(Error::Config(
                    "missing 'model_type' (expected \"gpt2\", \"llama\" or \"bert\")".into(),
                ))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a `config.json` file (errors name the file).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        read_config_file(path.as_ref(), Self::from_hf_json)
    }

    /// The Hugging Face `config.json` for this model.
    pub fn to_hf_json(&self) -> Value {
        let mut v = match self.arch {
            Arch::Gpt2 => super::family::gpt2::to_hf(self),
            Arch::Llama => super::family::llama::to_hf(self),
            Arch::Bert => super::family::bert::to_hf(self),
            // One stack of an encoder-decoder has no config.json of its own (the pair's is
            // `Seq2SeqConfig::to_hf_json`); tessera's dialect describes it.
            Arch::Marian | Arch::T5 => {
                return serde_json::to_value(self).expect("a config serializes")
            }
        };
        let obj = v.as_object_mut().expect("object");
        obj.insert("torch_dtype".into(), Value::from("float32"));
        for (k, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                obj.insert(k.into(), Value::from(id));
            }
        }
        v
    }

    /// The `config.json` a checkpoint of this model carries: its family's Hugging Face dialect
    /// when that expresses this configuration exactly (transformers loads it), else tessera's own
    /// dialect (e.g. a GPT-2 layout with sinusoidal positions, which no transformers class has).
    pub fn to_config_json(&self) -> Value {
        let hf = self.to_hf_json();
        match Self::from_hf_json(&hf) {
            Ok(c) if c == *self => hf,
            _ => serde_json::to_value(self).expect("a config serializes"),
        }
    }

    /// A decoder (causal self-attention, pre-norm): what `generate`, `chat` and LM training run.
    pub fn is_decoder(&self) -> bool {
        self.attention == AttentionKind::Causal
    }

    /// Fail unless this is a decoder-only language model; `what` names the use.
    pub fn require_decoder(&self, what: &str) -> Result<()> {
        if !self.is_decoder() {
            return Err(Error::Config(format!(
                "{what} needs a decoder (GPT-2 or Llama layout); this is a {:?} encoder",
                self.arch
            )));
        }
        if self.cross_attention || self.norm_placement != NormPlacement::Pre {
            return Err(Error::Config(format!(
                "{what} runs decoder-only pre-norm models; this one has {}",
                if self.cross_attention {
                    "a cross-attention slot (the decoder of an encoder-decoder)"
                } else {
                    "post-norm blocks"
                }
            )));
        }
        Ok(())
    }

    /// Fail unless this is an encoder (bidirectional self-attention); `what` names the use.
    pub fn require_encoder(&self, what: &str) -> Result<()> {
        if self.attention == AttentionKind::Bidirectional {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{what} needs an encoder (BERT layout); this is a {:?} decoder",
                self.arch
            )))
        }
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
        if self.type_vocab_size > 0 {
            check("type_vocab_size", self.type_vocab_size, lim::MAX_TYPE_VOCAB)?;
        }
        // T5's heads have their own width (`d_kv`): H·D need not be C.
        if self.arch != Arch::T5
            && !self.hidden_size.is_multiple_of(self.num_heads)
            && self.head_dim * self.num_heads != self.hidden_size
        {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if matches!(self.position, PositionKind::Rotary { .. }) && !self.head_dim.is_multiple_of(2)
        {
            return bad(format!(
                "rotary positions need an even head size, got {}",
                self.head_dim
            ));
        }
        if self.position == PositionKind::Sinusoidal && !self.hidden_size.is_multiple_of(2) {
            return bad(format!(
                "sinusoidal positions need an even hidden size, got {}",
                self.hidden_size
            ));
        }
        if let PositionKind::Relative {
            buckets,
            max_distance,
        } = self.position
        {
            // Half the buckets per direction in a bidirectional stack, half of those exact.
            let exact = if self.attention == AttentionKind::Bidirectional {
                buckets / 4
            } else {
                buckets / 2
            };
            if exact == 0 || buckets > 4096 || max_distance <= exact {
                return bad(format!(
                    "relative position buckets: {buckets} buckets up to a distance of \
                     {max_distance} do not fit together (at least 4 buckets, at most 4096, and \
                     the distance beyond the exact half)"
                ));
            }
        }
        if let Some(s) = self.attention_scale {
            if !(s.is_finite() && s > 0.0) {
                return bad(format!(
                    "attention scale must be a positive number, got {s}"
                ));
            }
        }
        if let PositionKind::Rotary { theta } = self.position {
            if !(theta.is_finite() && theta > 1.0) {
                return bad(format!("rope_theta must be a number above 1, got {theta}"));
            }
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return bad("norm epsilon must be positive".into());
        }
        if self.arch == Arch::Bert && self.attention != AttentionKind::Bidirectional {
            return bad("the BERT layout is an encoder (bidirectional attention)".into());
        }
        if matches!(self.arch, Arch::Gpt2 | Arch::Llama) && self.attention != AttentionKind::Causal
        {
            return bad(format!(
                "the {:?} layout is a decoder (causal attention)",
                self.arch
            ));
        }
        Ok(())
    }

    /// Number of trainable parameters (tied head counted once; a BERT pooler not counted).
    pub fn num_params(&self) -> usize {
        super::params::param_specs(self)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gpt2_json() -> Value {
        json!({"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 4,
               "n_positions": 64, "activation_function": "gelu_new"})
    }

    fn bert_json() -> Value {
        json!({"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "intermediate_size": 64})
    }

    #[test]
    fn gpt2_roundtrip() {
        let c = TransformerConfig::from_hf_json(&gpt2_json()).unwrap();
        assert_eq!(c.intermediate_size, 128);
        assert_eq!(c.head_dim, 8);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.norm_placement, NormPlacement::Pre);
        let c2 = TransformerConfig::from_hf_json(&c.to_hf_json()).unwrap();
        assert_eq!(c, c2);
    }

    #[test]
    fn llama_roundtrip_gqa() {
        let v = json!({"model_type": "llama", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
                       "max_position_embeddings": 64, "rope_theta": 500000.0});
        let c = TransformerConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.num_kv_heads, 2);
        assert_eq!(c.position, PositionKind::Rotary { theta: 500000.0 });
        assert_eq!(TransformerConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
    }

    #[test]
    fn bert_is_a_post_norm_bidirectional_configuration() {
        let c = TransformerConfig::from_hf_json(&bert_json()).unwrap();
        assert_eq!(c.arch, Arch::Bert);
        assert_eq!(c.norm_placement, NormPlacement::Post);
        assert_eq!(c.attention, AttentionKind::Bidirectional);
        assert_eq!(c.position, PositionKind::Learned);
        assert!(c.embedding_norm);
        assert_eq!(
            (c.type_vocab_size, c.max_position_embeddings, c.pad_token_id),
            (2, 512, Some(0))
        );
        assert_eq!((c.dropout, c.attention_dropout), (0.1, 0.1));
        assert_eq!(c.norm_eps, 1e-12);
        assert_eq!(TransformerConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        assert!(c.require_decoder("generate").is_err());
        assert!(c.require_encoder("embed").is_ok());
        let mut v = bert_json();
        v["position_embedding_type"] = json!("relative_key");
        let e = TransformerConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("relative_key"), "{e}");
    }

    #[test]
    fn tessera_dialect_roundtrip_and_sinusoidal() {
        let mut c = TransformerConfig::from_hf_json(&gpt2_json()).unwrap();
        c.position = PositionKind::Sinusoidal;
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["position"], json!({"kind": "sinusoidal"}));
        assert_eq!(TransformerConfig::from_hf_json(&v).unwrap(), c);
        // A checkpoint's config.json keeps it: the GPT-2 dialect cannot say "sinusoidal".
        assert_eq!(c.to_config_json(), v);
        let plain = TransformerConfig::from_hf_json(&gpt2_json()).unwrap();
        assert_eq!(plain.to_config_json()["model_type"], "gpt2");
        let mut bad = v.clone();
        bad["wiggle"] = json!(1);
        let e = TransformerConfig::from_hf_json(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("wiggle"), "{e}");
        c.hidden_size = 33;
        c.num_heads = 3;
        c.num_kv_heads = 3;
        c.head_dim = 11;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("sinusoidal positions need an even hidden size"),
            "{e}"
        );
    }

    #[test]
    fn rope_theta_from_transformers_5_rope_parameters() {
        let base = json!({"model_type": "llama", "vocab_size": 100, "hidden_size": 32,
                          "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                          "max_position_embeddings": 64});
        let theta = |v: &Value| match TransformerConfig::from_hf_json(v).unwrap().position {
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
        let e = TransformerConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("rotary scaling 'llama3'"), "{e}");
        let mut v = base;
        v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        assert!(TransformerConfig::from_hf_json(&v).is_err());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let err = |v: &Value| TransformerConfig::from_hf_json(v).unwrap_err().to_string();
        let mut v = gpt2_json();
        v["n_head"] = json!(5);
        assert!(err(&v).contains("not divisible"), "{}", err(&v));
        let mut v = gpt2_json();
        v["activation_function"] = json!("wiggle");
        assert!(err(&v).contains("unknown activation 'wiggle'"));
        assert!(err(&json!({"model_type": "gptj"})).contains("unsupported model_type"));
        assert!(err(&json!({"model_type": "t5"})).contains("is an encoder-decoder"));
        assert!(err(&json!({"n_embd": 3})).contains("missing 'model_type'"));
        let mut v = gpt2_json();
        v["n_layer"] = json!(-1);
        let e = err(&v);
        assert!(
            e.contains("'n_layer' must be a non-negative integer"),
            "{e}"
        );
        let mut v = gpt2_json();
        v["layer_norm_epsilon"] = json!("small");
        assert!(err(&v).contains("'layer_norm_epsilon' must be a number"));
        let mut v = gpt2_json();
        v["tie_word_embeddings"] = json!("yes");
        assert!(err(&v).contains("'tie_word_embeddings' must be true or false"));
        let mut v = gpt2_json();
        v["resid_pdrop"] = json!(1.5);
        assert!(err(&v).contains("dropout"));
        let mut v = gpt2_json();
        v.as_object_mut().unwrap().remove("n_embd");
        assert!(err(&v).contains("missing 'n_embd'"));
        let mut v = bert_json();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(err(&v).contains("missing 'hidden_size'"));
        assert!(err(&json!([1, 2])).contains("must be a JSON object"));
    }

    #[test]
    fn param_count_gpt2_small_shape() {
        // GPT-2 small: 124,439,808 parameters with a tied head.
        let v = json!({"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12,
                       "n_head": 12, "n_positions": 1024});
        assert_eq!(
            TransformerConfig::from_hf_json(&v).unwrap().num_params(),
            124_439_808
        );
    }

    #[test]
    fn param_count_bert_base_shape() {
        // bert-base-uncased without its pooler: 109,482,240 - 590,592 = 108,891,648.
        let v = json!({"model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
                       "num_hidden_layers": 12, "num_attention_heads": 12,
                       "intermediate_size": 3072});
        assert_eq!(
            TransformerConfig::from_hf_json(&v).unwrap().num_params(),
            108_891_648
        );
    }
}
