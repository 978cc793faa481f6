//! Marian (`MarianMTModel`): an encoder-decoder of post-norm LayerNorm blocks, sinusoidal
//! positions (half-split sin | cos), embeddings scaled by sqrt(d_model) and shared by the encoder,
//! the decoder and the head, biases everywhere, a `final_logits_bias`; the decoder starts from the
//! pad token. Each stack is a [`TransformerConfig`] (the decoder's with the cross-attention slot);
//! the pair is a [`Seq2SeqConfig`].

use super::Names;
use crate::models::block::NormPlacement;
use crate::models::config::{
    Activation, Arch, AttentionKind, HfConfig, NormKind, PositionKind, TransformerConfig,
};
use crate::models::seq2seq::Seq2SeqConfig;
use crate::{Error, Result};
use serde_json::{json, Value};

/// Marian `config.json` → the encoder and decoder configurations.
pub fn config(hf: &HfConfig) -> Result<Seq2SeqConfig> {
    let refuse = |what: &str| Err(Error::Config(format!("Marian: {what} is not supported")));
    if hf.share_encoder_decoder_embeddings == Some(false) {
        return refuse("share_encoder_decoder_embeddings = false (separate vocabularies)");
    }
    if hf.normalize_before == Some(true) {
        return refuse("normalize_before = true (pre-norm blocks)");
    }
    if hf.add_final_layer_norm == Some(true) || hf.layernorm_embedding == Some(true) {
        return refuse("an embedding or final layer norm (a BART/mBART layout)");
    }
    let vocab = HfConfig::need("vocab_size", &[hf.vocab_size])?;
    if let Some(dv) = hf.decoder_vocab_size {
        if dv != vocab {
            return Err(Error::Config(format!(
                "Marian: decoder_vocab_size {dv} differs from vocab_size {vocab} (separate \
                 vocabularies are not supported)"
            )));
        }
    }
    let hidden = HfConfig::need("d_model", &[hf.d_model, hf.hidden_size])?;
    let pad = HfConfig::token_id(&hf.pad_token_id)
        .ok_or_else(|| Error::Config("Marian: missing 'pad_token_id'".into()))?;
    let eos = HfConfig::token_id(&hf.eos_token_id);
    let stack = |layers: usize, heads: usize, ffn: usize, attention: AttentionKind| {
        Ok::<_, Error>(TransformerConfig {
            arch: Arch::Marian,
            vocab_size: vocab,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            num_kv_heads: heads,
            head_dim: hidden.checked_div(heads).unwrap_or(0),
            intermediate_size: ffn,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(1024),
            type_vocab_size: 0,
            norm: NormKind::LayerNorm,
            norm_placement: NormPlacement::Post,
            norm_eps: 1e-5,
            embedding_norm: false,
            scale_embedding: hf.scale_embedding.unwrap_or(false),
            attention,
            attention_scale: None,
            cross_attention: attention == AttentionKind::Causal,
            position: PositionKind::Sinusoidal,
            activation: Activation::parse(hf.activation_function.as_deref().unwrap_or("gelu"))?,
            gated_mlp: false,
            bias: true,
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(true),
            dropout: hf.dropout.unwrap_or(0.1) as f32,
            attention_dropout: hf.attention_dropout.unwrap_or(0.0) as f32,
            initializer_range: hf.init_std.unwrap_or(0.02),
            bos_token_id: HfConfig::token_id(&hf.bos_token_id),
            eos_token_id: eos,
            pad_token_id: Some(pad),
        })
    };
    let encoder = stack(
        HfConfig::need("encoder_layers", &[hf.encoder_layers])?,
        HfConfig::need("encoder_attention_heads", &[hf.encoder_attention_heads])?,
        HfConfig::need("encoder_ffn_dim", &[hf.encoder_ffn_dim])?,
        AttentionKind::Bidirectional,
    )?;
    let decoder = stack(
        HfConfig::need("decoder_layers", &[hf.decoder_layers])?,
        HfConfig::need("decoder_attention_heads", &[hf.decoder_attention_heads])?,
        HfConfig::need("decoder_ffn_dim", &[hf.decoder_ffn_dim])?,
        AttentionKind::Causal,
    )?;
    Ok(Seq2SeqConfig {
        encoder,
        decoder,
        decoder_start_token_id: HfConfig::token_id(&hf.decoder_start_token_id).unwrap_or(pad),
        forced_eos_token_id: HfConfig::token_id(&hf.forced_eos_token_id),
        scale_decoder_outputs: false,
    })
}

/// The pair → Marian `config.json` (what `MarianMTModel.from_pretrained` reads).
pub fn to_hf(c: &Seq2SeqConfig) -> Value {
    let (e, d) = (&c.encoder, &c.decoder);
    json!({
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        "is_encoder_decoder": true,
        "vocab_size": d.vocab_size,
        "decoder_vocab_size": d.vocab_size,
        "d_model": d.hidden_size,
        "encoder_layers": e.num_layers,
        "encoder_attention_heads": e.num_heads,
        "encoder_ffn_dim": e.intermediate_size,
        "decoder_layers": d.num_layers,
        "decoder_attention_heads": d.num_heads,
        "decoder_ffn_dim": d.intermediate_size,
        "max_position_embeddings": d.max_position_embeddings,
        "activation_function": d.activation.hf_name(),
        "scale_embedding": d.scale_embedding,
        "share_encoder_decoder_embeddings": true,
        "tie_word_embeddings": d.tie_word_embeddings,
        "dropout": d.dropout,
        "attention_dropout": d.attention_dropout,
        "activation_dropout": 0.0,
        "init_std": d.initializer_range,
        "decoder_start_token_id": c.decoder_start_token_id,
        "forced_eos_token_id": c.forced_eos_token_id,
    })
}

/// Marian tensor names of the stack under `prefix` (`model.encoder.` or `model.decoder.`).
pub fn names(prefix: &str) -> Names {
    let p = prefix.to_string();
    Names {
        wte: "model.shared.weight".into(),
        wpe: format!("{prefix}embed_positions.weight"),
        wtt: format!("{prefix}embed_token_types.weight"),
        ln_emb: format!("{prefix}layernorm_embedding"),
        ln_f: format!("{prefix}layer_norm"),
        lm_head: "lm_head.weight".into(),
        rel_bias: format!("{prefix}relative_attention_bias"),
        pooler: format!("{prefix}pooler"),
        layer: Box::new(move |i, part| {
            let s = match part {
                "ln1" => "self_attn_layer_norm",
                "q" => "self_attn.q_proj",
                "k" => "self_attn.k_proj",
                "v" => "self_attn.v_proj",
                "o" => "self_attn.out_proj",
                "lnx" => "encoder_attn_layer_norm",
                "xq" => "encoder_attn.q_proj",
                "xk" => "encoder_attn.k_proj",
                "xv" => "encoder_attn.v_proj",
                "xo" => "encoder_attn.out_proj",
                "fc" => "fc1",
                "proj" => "fc2",
                "ln2" => "final_layer_norm",
                other => other,
            };
            format!("{p}layers.{i}.{s}")
        }),
        conv1d: false,
        fused_qkv: false,
    }
}
