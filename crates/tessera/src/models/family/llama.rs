//! Llama (`LlamaForCausalLM`): pre-norm RMSNorm blocks, rotary positions, gated SiLU MLP,
//! grouped-query attention, no biases.

use super::Names;
use crate::models::block::NormPlacement;
use crate::models::config::{
    Activation, Arch, AttentionKind, HfConfig, NormKind, PositionKind, TransformerConfig,
};
use crate::{Error, Result};
use serde_json::{json, Value};

/// Llama's rotary base: top-level `rope_theta` (transformers 4), else `rope_parameters.rope_theta`
/// (transformers 5 writes it there), else 10000. Scaled variants (`rope_type` other than
/// `default`, or a `rope_scaling`) are refused rather than silently run unscaled.
fn rope_theta(hf: &HfConfig) -> Result<f64> {
    let params = hf.rope_parameters.as_ref().and_then(Value::as_object);
    for scaling in [
        hf.rope_scaling.as_ref(),
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
    if let Some(t) = hf.rope_theta {
        return Ok(t);
    }
    match params.and_then(|p| p.get("rope_theta")) {
        None | Some(Value::Null) => Ok(10000.0),
        Some(v) => v.as_f64().ok_or_else(|| {
            Error::Config(format!(
                "'rope_parameters.rope_theta' must be a number, got {v}"
            ))
        }),
    }
}

/// Llama `config.json` → the one configuration.
pub fn config(hf: &HfConfig) -> Result<TransformerConfig> {
    let hidden = HfConfig::need("hidden_size", &[hf.hidden_size])?;
    let heads = HfConfig::need("num_attention_heads", &[hf.num_attention_heads])?;
    let attn_bias = hf.attention_bias.unwrap_or(false);
    if attn_bias != hf.mlp_bias.unwrap_or(false) {
        return Err(Error::Config(
            "attention_bias and mlp_bias must be equal (mixed biases are not supported)".into(),
        ));
    }
    Ok(TransformerConfig {
        arch: Arch::Llama,
        vocab_size: HfConfig::need("vocab_size", &[hf.vocab_size])?,
        hidden_size: hidden,
        num_layers: HfConfig::need("num_hidden_layers", &[hf.num_hidden_layers])?,
        num_heads: heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
        intermediate_size: HfConfig::need("intermediate_size", &[hf.intermediate_size])?,
        max_position_embeddings: HfConfig::need(
            "max_position_embeddings",
            &[hf.max_position_embeddings],
        )?,
        type_vocab_size: 0,
        norm: NormKind::RmsNorm,
        norm_placement: NormPlacement::Pre,
        norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
        embedding_norm: false,
        scale_embedding: false,
        attention: AttentionKind::Causal,
        attention_scale: None,
        cross_attention: false,
        position: PositionKind::Rotary {
            theta: rope_theta(hf)?,
        },
        activation: Activation::parse(hf.hidden_act.as_deref().unwrap_or("silu"))?,
        gated_mlp: true,
        bias: attn_bias,
        tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
        // Llama's one dropout knob is the attention weights'; tessera drops the embeddings and
        // residual branches at the same rate unless `resid_pdrop` (a name transformers' Llama
        // ignores) says otherwise.
        dropout: hf.resid_pdrop.or(hf.attention_dropout).unwrap_or(0.0) as f32,
        attention_dropout: hf.attention_dropout.unwrap_or(0.0) as f32,
        initializer_range: hf.initializer_range.unwrap_or(0.02),
        bos_token_id: HfConfig::token_id(&hf.bos_token_id),
        eos_token_id: HfConfig::token_id(&hf.eos_token_id),
        pad_token_id: HfConfig::token_id(&hf.pad_token_id),
    })
}

/// The configuration → Llama `config.json`.
pub fn to_hf(c: &TransformerConfig) -> Value {
    let mut v = to_hf_fields(c);
    if c.dropout != c.attention_dropout {
        v["resid_pdrop"] = json!(c.dropout);
    }
    v
}

fn to_hf_fields(c: &TransformerConfig) -> Value {
    let theta = match c.position {
        PositionKind::Rotary { theta } => theta,
        _ => 10000.0,
    };
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": c.activation.hf_name(),
        "rms_norm_eps": c.norm_eps,
        "rope_theta": theta,
        "attention_bias": c.bias,
        "mlp_bias": c.bias,
        "attention_dropout": c.attention_dropout,
        "tie_word_embeddings": c.tie_word_embeddings,
        "initializer_range": c.initializer_range,
    })
}

/// Llama tensor names.
pub fn names() -> Names {
    Names {
        wte: "model.embed_tokens.weight".into(),
        wpe: "model.embed_positions.weight".into(),
        wtt: "model.embed_token_types.weight".into(),
        ln_emb: "model.embed_norm".into(),
        ln_f: "model.norm".into(),
        lm_head: "lm_head.weight".into(),
        rel_bias: "model.relative_attention_bias".into(),
        pooler: "model.pooler".into(),
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
        conv1d: false,
        fused_qkv: false,
    }
}
