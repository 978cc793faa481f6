//! BERT (`BertModel`, and under `bert.` in the task checkpoints): post-norm LayerNorm blocks,
//! bidirectional attention, learned positions and token types, an embedding LayerNorm, GELU MLP,
//! biases, a pooler.

use super::Names;
use crate::models::block::NormPlacement;
use crate::models::config::{
    Activation, Arch, AttentionKind, HfConfig, NormKind, PositionKind, TransformerConfig,
};
use crate::{Error, Result};
use serde_json::{json, Value};

/// BERT `config.json` → the one configuration.
pub fn config(hf: &HfConfig) -> Result<TransformerConfig> {
    if let Some(p) = hf.position_embedding_type.as_deref() {
        if p != "absolute" {
            return Err(Error::Config(format!(
                "position_embedding_type '{p}' is not supported (only \"absolute\")"
            )));
        }
    }
    let hidden = HfConfig::need("hidden_size", &[hf.hidden_size])?;
    let heads = HfConfig::need("num_attention_heads", &[hf.num_attention_heads])?;
    Ok(TransformerConfig {
        arch: Arch::Bert,
        vocab_size: HfConfig::need("vocab_size", &[hf.vocab_size])?,
        hidden_size: hidden,
        num_layers: HfConfig::need("num_hidden_layers", &[hf.num_hidden_layers])?,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: hidden.checked_div(heads).unwrap_or(0),
        intermediate_size: HfConfig::need("intermediate_size", &[hf.intermediate_size])?,
        max_position_embeddings: hf.max_position_embeddings.unwrap_or(512),
        type_vocab_size: hf.type_vocab_size.unwrap_or(2),
        norm: NormKind::LayerNorm,
        norm_placement: NormPlacement::Post,
        norm_eps: hf.layer_norm_eps.unwrap_or(1e-12),
        embedding_norm: true,
        scale_embedding: false,
        attention: AttentionKind::Bidirectional,
        attention_scale: None,
        cross_attention: false,
        position: PositionKind::Learned,
        activation: Activation::parse(hf.hidden_act.as_deref().unwrap_or("gelu"))?,
        gated_mlp: false,
        bias: true,
        tie_word_embeddings: false,
        dropout: hf.hidden_dropout_prob.unwrap_or(0.1) as f32,
        attention_dropout: hf.attention_probs_dropout_prob.unwrap_or(0.1) as f32,
        initializer_range: hf.initializer_range.unwrap_or(0.02),
        bos_token_id: HfConfig::token_id(&hf.bos_token_id),
        eos_token_id: HfConfig::token_id(&hf.eos_token_id),
        pad_token_id: Some(HfConfig::token_id(&hf.pad_token_id).unwrap_or(0)),
    })
}

/// The configuration → the `config.json` of a `BertModel` (task heads add their own keys).
pub fn to_hf(c: &TransformerConfig) -> Value {
    json!({
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.norm_eps,
        "hidden_act": c.activation.hf_name(),
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attention_dropout,
        "initializer_range": c.initializer_range,
        "position_embedding_type": "absolute",
    })
}

/// BERT tensor names under `prefix`.
pub fn names(prefix: &str) -> Names {
    let e = format!("{prefix}embeddings");
    let p = prefix.to_string();
    Names {
        wte: format!("{e}.word_embeddings.weight"),
        wpe: format!("{e}.position_embeddings.weight"),
        wtt: format!("{e}.token_type_embeddings.weight"),
        ln_emb: format!("{e}.LayerNorm"),
        ln_f: format!("{prefix}encoder.final_norm"),
        lm_head: format!("{prefix}lm_head.weight"),
        rel_bias: format!("{prefix}relative_attention_bias"),
        pooler: format!("{prefix}pooler.dense"),
        layer: Box::new(move |i, part| {
            let s = match part {
                "ln1" => "attention.output.LayerNorm",
                "ln2" => "output.LayerNorm",
                "q" => "attention.self.query",
                "k" => "attention.self.key",
                "v" => "attention.self.value",
                "o" => "attention.output.dense",
                "fc" => "intermediate.dense",
                "proj" => "output.dense",
                other => other,
            };
            format!("{p}encoder.layer.{i}.{s}")
        }),
        conv1d: false,
        fused_qkv: false,
    }
}
