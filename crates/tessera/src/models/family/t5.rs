//! T5 (`T5ForConditionalGeneration`): an encoder-decoder of pre-norm blocks with T5's "layer
//! norm" (an RMSNorm: weight only, no mean), no biases, attention scores left unscaled (the
//! 1/sqrt(D) lives in the query weights), a bucketed relative position bias per head (one table per
//! stack, stored in its first block, shared by all), a ReLU (`wi`, `wo`) or gated (`wi_0`, `wi_1`,
//! `wo`; "gated-gelu" is GELU-tanh) MLP, a final norm in each stack, and one embedding table
//! shared by both stacks and, unless the file carries its own `lm_head.weight`, the head. The
//! decoder's output is multiplied by d_model^-0.5 before the head when `scale_decoder_outputs`
//! says so (original T5; transformers derives it from `tie_word_embeddings`, true unless false).
//! The decoder starts from the pad token. Each stack is a [`TransformerConfig`]; the pair is a
//! [`Seq2SeqConfig`].

use super::Names;
use crate::models::block::NormPlacement;
use crate::models::config::{
    Activation, Arch, AttentionKind, HfConfig, NormKind, PositionKind, TransformerConfig,
};
use crate::models::seq2seq::Seq2SeqConfig;
use crate::{Error, Result};
use serde_json::{json, Value};

/// `feed_forward_proj` → (activation, gated), as transformers reads it: `act` or `gated-act`,
/// with "gated-gelu" meaning GELU-tanh (`gelu_new`).
fn feed_forward(proj: &str) -> Result<(Activation, bool)> {
    let (gated, act) = match proj.split_once('-') {
        Some(("gated", act)) if !act.contains('-') => (true, act),
        None => (false, proj),
        _ => {
            return Err(Error::Config(format!(
                "T5: feed_forward_proj '{proj}' is not 'ACT' or 'gated-ACT'"
            )))
        }
    };
    let act = if proj == "gated-gelu" {
        "gelu_new"
    } else {
        act
    };
    Ok((Activation::parse(act)?, gated))
}

/// T5 `config.json` → the encoder and decoder configurations.
pub fn config(hf: &HfConfig) -> Result<Seq2SeqConfig> {
    let vocab = HfConfig::need("vocab_size", &[hf.vocab_size])?;
    let hidden = HfConfig::need("d_model", &[hf.d_model])?;
    let heads = HfConfig::need("num_heads", &[hf.num_heads])?;
    let head_dim = HfConfig::need("d_kv", &[hf.d_kv])?;
    let ffn = HfConfig::need("d_ff", &[hf.d_ff])?;
    let layers = HfConfig::need("num_layers", &[hf.num_layers])?;
    let (activation, gated) = feed_forward(hf.feed_forward_proj.as_deref().unwrap_or("relu"))?;
    let pad = HfConfig::token_id(&hf.pad_token_id).unwrap_or(0);
    let position = PositionKind::Relative {
        buckets: hf.relative_attention_num_buckets.unwrap_or(32),
        max_distance: hf.relative_attention_max_distance.unwrap_or(128),
    };
    let stack = |layers: usize, attention: AttentionKind| TransformerConfig {
        arch: Arch::T5,
        vocab_size: vocab,
        hidden_size: hidden,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim,
        intermediate_size: ffn,
        // T5 has no position table; its relative bias extends to any length. This bounds the
        // inputs tessera accepts (transformers' `n_positions`, 512 in the original configs).
        max_position_embeddings: hf.n_positions.unwrap_or(512),
        type_vocab_size: 0,
        norm: NormKind::RmsNorm,
        norm_placement: NormPlacement::Pre,
        norm_eps: hf.layer_norm_epsilon.unwrap_or(1e-6),
        embedding_norm: false,
        scale_embedding: false,
        attention,
        attention_scale: Some(1.0),
        cross_attention: attention == AttentionKind::Causal,
        position,
        activation,
        gated_mlp: gated,
        bias: false,
        // The head is the shared table unless the file has `lm_head.weight`
        // (`Seq2Seq::load_dir` unties it then).
        tie_word_embeddings: true,
        dropout: hf.dropout_rate.unwrap_or(0.1) as f32,
        attention_dropout: 0.0,
        initializer_range: hf.initializer_factor.unwrap_or(1.0) * (hidden as f64).powf(-0.5),
        bos_token_id: None,
        eos_token_id: HfConfig::token_id(&hf.eos_token_id).or(Some(1)),
        pad_token_id: Some(pad),
    };
    let decoder_layers = hf.num_decoder_layers.unwrap_or(layers);
    Ok(Seq2SeqConfig {
        encoder: stack(layers, AttentionKind::Bidirectional),
        decoder: stack(decoder_layers, AttentionKind::Causal),
        decoder_start_token_id: HfConfig::token_id(&hf.decoder_start_token_id).unwrap_or(pad),
        forced_eos_token_id: HfConfig::token_id(&hf.forced_eos_token_id),
        scale_decoder_outputs: hf
            .scale_decoder_outputs
            .unwrap_or(hf.tie_word_embeddings != Some(false)),
    })
}

/// The pair → T5 `config.json` (what `T5ForConditionalGeneration.from_pretrained` reads).
pub fn to_hf(c: &Seq2SeqConfig) -> Value {
    let (e, d) = (&c.encoder, &c.decoder);
    let (buckets, max_distance) = match e.position {
        PositionKind::Relative {
            buckets,
            max_distance,
        } => (buckets, max_distance),
        _ => (32, 128),
    };
    let act = d.activation.hf_name();
    let proj = match (d.gated_mlp, act) {
        (true, "gelu_new") => "gated-gelu".to_string(),
        (true, a) => format!("gated-{a}"),
        (false, a) => a.to_string(),
    };
    json!({
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "is_encoder_decoder": true,
        "vocab_size": d.vocab_size,
        "d_model": d.hidden_size,
        "d_kv": d.head_dim,
        "d_ff": d.intermediate_size,
        "num_layers": e.num_layers,
        "num_decoder_layers": d.num_layers,
        "num_heads": d.num_heads,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance": max_distance,
        "feed_forward_proj": proj,
        "layer_norm_epsilon": d.norm_eps,
        "dropout_rate": d.dropout,
        "n_positions": d.max_position_embeddings,
        "tie_word_embeddings": c.scale_decoder_outputs,
        "scale_decoder_outputs": c.scale_decoder_outputs,
        "decoder_start_token_id": c.decoder_start_token_id,
        "forced_eos_token_id": c.forced_eos_token_id,
    })
}

/// T5 tensor names of the stack under `prefix` (`encoder.` or `decoder.`). A decoder block's
/// sublayers are self-attention (`layer.0`), cross-attention (`layer.1`) and the MLP
/// (`layer.2`); an encoder block has no cross-attention, so its MLP is `layer.1`.
pub fn names(prefix: &str) -> Names {
    let p = prefix.to_string();
    let ff = if prefix.starts_with("decoder") { 2 } else { 1 };
    Names {
        wte: "shared.weight".into(),
        wpe: format!("{prefix}embed_positions.weight"),
        wtt: format!("{prefix}embed_token_types.weight"),
        ln_emb: format!("{prefix}layernorm_embedding"),
        ln_f: format!("{prefix}final_layer_norm"),
        lm_head: "lm_head.weight".into(),
        rel_bias: format!("{prefix}block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        pooler: format!("{prefix}pooler"),
        layer: Box::new(move |i, part| {
            let s = match part {
                "ln1" => "layer.0.layer_norm".to_string(),
                "q" | "k" | "v" | "o" => format!("layer.0.SelfAttention.{part}"),
                "lnx" => "layer.1.layer_norm".to_string(),
                "xq" | "xk" | "xv" | "xo" => format!("layer.1.EncDecAttention.{}", &part[1..]),
                "ln2" => format!("layer.{ff}.layer_norm"),
                "fc" => format!("layer.{ff}.DenseReluDense.wi"),
                "gate" => format!("layer.{ff}.DenseReluDense.wi_0"),
                "up" => format!("layer.{ff}.DenseReluDense.wi_1"),
                "proj" | "down" => format!("layer.{ff}.DenseReluDense.wo"),
                other => other.to_string(),
            };
            format!("{p}block.{i}.{s}")
        }),
        conv1d: false,
        fused_qkv: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_forward_names_as_transformers_reads_them() {
        assert_eq!(feed_forward("relu").unwrap(), (Activation::Relu, false));
        assert_eq!(
            feed_forward("gated-gelu").unwrap(),
            (Activation::GeluTanh, true)
        );
        assert_eq!(
            feed_forward("gated-silu").unwrap(),
            (Activation::Silu, true)
        );
        assert!(feed_forward("gated-gelu-x").is_err());
        assert!(feed_forward("other-relu").is_err());
    }

    #[test]
    fn bad_t5_configs_are_clear_errors() {
        let base = json!({"model_type": "t5", "vocab_size": 40, "d_model": 16, "d_kv": 4,
            "d_ff": 24, "num_layers": 2, "num_heads": 4});
        let err = |patch: Value| {
            let mut v = base.clone();
            for (k, x) in patch.as_object().unwrap() {
                if x.is_null() {
                    v.as_object_mut().unwrap().remove(k);
                } else {
                    v[k] = x.clone();
                }
            }
            Seq2SeqConfig::from_hf_json(&v).unwrap_err().to_string()
        };
        assert!(Seq2SeqConfig::from_hf_json(&base).is_ok());
        assert!(err(json!({"d_kv": null})).contains("missing 'd_kv'"));
        assert!(err(json!({"feed_forward_proj": "gated-wiggle"})).contains("unknown activation"));
        assert!(err(json!({"relative_attention_num_buckets": 2})).contains("buckets"));
        assert!(err(json!({"relative_attention_max_distance": 3})).contains("buckets"));
        assert!(err(json!({"num_heads": "four"})).contains("'num_heads'"));
    }

    #[test]
    fn config_round_trips_through_config_json() {
        let hf = json!({"model_type": "t5", "vocab_size": 40, "d_model": 16, "d_kv": 6,
            "d_ff": 24, "num_layers": 2, "num_decoder_layers": 3, "num_heads": 4,
            "relative_attention_num_buckets": 8, "relative_attention_max_distance": 20,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
            "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0});
        let c = Seq2SeqConfig::from_hf_json(&hf).unwrap();
        assert_eq!(c.encoder.num_layers, 2);
        assert_eq!(c.decoder.num_layers, 3);
        assert_eq!(c.decoder.head_dim * c.decoder.num_heads, 24);
        assert!(!c.scale_decoder_outputs);
        assert_eq!(c.encoder.attention_scale, Some(1.0));
        assert_eq!(Seq2SeqConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        let names = names("decoder.");
        assert_eq!(
            (names.layer)(1, "down"),
            "decoder.block.1.layer.2.DenseReluDense.wo"
        );
        assert_eq!(
            (names.layer)(0, "xk"),
            "decoder.block.0.layer.1.EncDecAttention.k"
        );
    }
}
