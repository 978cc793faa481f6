//! GPT-2 (`GPT2LMHeadModel`): pre-norm LayerNorm blocks, learned positions, GELU MLP, biases,
//! a fused QKV projection stored as Conv1D, tied head.

use super::Names;
use crate::models::block::NormPlacement;
use crate::models::config::{
    Activation, Arch, AttentionKind, HfConfig, NormKind, PositionKind, TransformerConfig,
};
use crate::Result;
use serde_json::{json, Value};

/// GPT-2 `config.json` → the one configuration.
pub fn config(hf: &HfConfig) -> Result<TransformerConfig> {
    let hidden = HfConfig::need("n_embd", &[hf.n_embd, hf.hidden_size])?;
    let heads = HfConfig::need("n_head", &[hf.n_head, hf.num_attention_heads])?;
    let resid = hf.resid_pdrop.unwrap_or(0.0) as f32;
    Ok(TransformerConfig {
        arch: Arch::Gpt2,
        vocab_size: HfConfig::need("vocab_size", &[hf.vocab_size])?,
        hidden_size: hidden,
        num_layers: HfConfig::need("n_layer", &[hf.n_layer, hf.num_hidden_layers])?,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: hidden.checked_div(heads).unwrap_or(0),
        intermediate_size: hf.n_inner.unwrap_or(4 * hidden),
        max_position_embeddings: HfConfig::need(
            "n_positions",
            &[hf.n_positions, hf.max_position_embeddings],
        )?,
        type_vocab_size: 0,
        norm: NormKind::LayerNorm,
        norm_placement: NormPlacement::Pre,
        norm_eps: hf.layer_norm_epsilon.unwrap_or(1e-5),
        embedding_norm: false,
        scale_embedding: false,
        attention: AttentionKind::Causal,
        attention_scale: None,
        cross_attention: false,
        position: PositionKind::Learned,
        activation: Activation::parse(hf.activation_function.as_deref().unwrap_or("gelu_new"))?,
        gated_mlp: false,
        bias: true,
        tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(true),
        dropout: resid,
        attention_dropout: hf.attn_pdrop.map_or(resid, |p| p as f32),
        initializer_range: hf.initializer_range.unwrap_or(0.02),
        bos_token_id: HfConfig::token_id(&hf.bos_token_id),
        eos_token_id: HfConfig::token_id(&hf.eos_token_id),
        pad_token_id: HfConfig::token_id(&hf.pad_token_id),
    })
}

/// The configuration → GPT-2 `config.json`.
pub fn to_hf(c: &TransformerConfig) -> Value {
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_embd": c.hidden_size,
        "n_layer": c.num_layers,
        "n_head": c.num_heads,
        "n_inner": c.intermediate_size,
        "n_positions": c.max_position_embeddings,
        "n_ctx": c.max_position_embeddings,
        "activation_function": c.activation.hf_name(),
        "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.attention_dropout,
        "tie_word_embeddings": c.tie_word_embeddings,
        "initializer_range": c.initializer_range,
        "scale_attn_weights": true,
    })
}

/// GPT-2 tensor names.
pub fn names() -> Names {
    Names {
        wte: "transformer.wte.weight".into(),
        wpe: "transformer.wpe.weight".into(),
        wtt: "transformer.wtt.weight".into(),
        ln_emb: "transformer.ln_emb".into(),
        ln_f: "transformer.ln_f".into(),
        lm_head: "lm_head.weight".into(),
        rel_bias: "transformer.relative_attention_bias".into(),
        pooler: "transformer.pooler".into(),
        layer: Box::new(|i, part| {
            let p = match part {
                "ln1" => "ln_1",
                "ln2" => "ln_2",
                "qkv" => "attn.c_attn",
                "o" => "attn.c_proj",
                "fc" => "mlp.c_fc",
                "proj" => "mlp.c_proj",
                // Not used by GPT-2 configs; kept unique for completeness.
                other => other,
            };
            format!("transformer.h.{i}.{p}")
        }),
        conv1d: true,
        fused_qkv: true,
    }
}
