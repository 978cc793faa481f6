//! Build the Llama-family [`Transformer`] from a GGUF file: the config from `llama.*` metadata,
//! the weights from its tensors, dequantized to the requested float type.
//!
//! GGUF names map to Hugging Face names (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj
//! .weight`). llama.cpp's converter permutes the rows of `attn_q` and `attn_k` within each head to
//! suit its interleaved rotary embedding (pairs `(2i, 2i+1)`); our rotary uses the Hugging Face
//! half-split layout (pairs `(i, i + D/2)`), so that permutation is undone here, as transformers'
//! GGUF loader does.

use super::config::TransformerConfig;
use super::transformer::Transformer;
use crate::kernels::quant::{QMatrix, QType};
use crate::kernels::rotary;
use crate::weights::{ggml_type_name, Gguf, TensorView};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::collections::HashMap;

/// The Hugging Face `config.json` equivalent of a GGUF file's `llama.*` metadata.
pub fn config_from_gguf(g: &Gguf) -> Result<TransformerConfig> {
    let arch = g
        .architecture()?
        .ok_or_else(|| g.error("missing 'general.architecture'"))?;
    if arch != "llama" {
        return Err(g.error(format!(
            "unsupported architecture '{arch}' (this loader builds the llama family)"
        )));
    }
    use super::limits::{self as lim, check};
    // Every size is checked against tessera's limits under its own GGUF name before anything is
    // derived from it (a head count of 2^31 would otherwise surface as a head size of 0).
    let limit = |k: &str, max: usize| -> Result<Option<u64>> {
        let key = format!("llama.{k}");
        match g.get_u64(&key)? {
            None => Ok(None),
            Some(v) => {
                check(&key, usize::try_from(v).unwrap_or(usize::MAX), max)
                    .map_err(|e| g.error(e.to_string()))?;
                Ok(Some(v))
            }
        }
    };
    let need = |k: &str, max: usize| -> Result<u64> {
        limit(k, max)?.ok_or_else(|| g.error(format!("missing 'llama.{k}'")))
    };
    let hidden = need("embedding_length", lim::MAX_HIDDEN)?;
    let heads = need("attention.head_count", lim::MAX_HEADS)?;
    let kv_heads = limit("attention.head_count_kv", lim::MAX_HEADS)?.unwrap_or(heads);
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| g.error("missing tensor 'token_embd.weight'"))?;
    let vocab = match limit("vocab_size", lim::MAX_VOCAB)? {
        Some(v) => v,
        None => embd.dims.get(1).copied().unwrap_or(0),
    };
    if let Some(scaling) = g.get_str("llama.rope.scaling.type")? {
        if scaling != "none" {
            return Err(g.error(format!("rope scaling '{scaling}' is not supported")));
        }
    }
    let head_dim = match limit("attention.key_length", lim::MAX_HEAD_DIM)? {
        Some(d) => d,
        None => hidden.checked_div(heads).unwrap_or(0),
    };
    if let Some(rot) = g.get_u64("llama.rope.dimension_count")? {
        if rot != head_dim {
            return Err(g.error(format!(
                "partial rotary embedding (rope.dimension_count {rot} of head size {head_dim}) is not supported"
            )));
        }
    }
    let v = json!({
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": need("block_count", lim::MAX_LAYERS)?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": need("feed_forward_length", lim::MAX_INTERMEDIATE)?,
        "max_position_embeddings": need("context_length", lim::MAX_CONTEXT)?,
        "rms_norm_eps": g.get_f64("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        "rope_theta": g.get_f64("llama.rope.freq_base")?.unwrap_or(10000.0),
        "hidden_act": "silu",
        "tie_word_embeddings": g.tensor("output.weight").is_none(),
        "bos_token_id": g.get_u64("tokenizer.ggml.bos_token_id")?,
        "eos_token_id": g.get_u64("tokenizer.ggml.eos_token_id")?,
    });
    TransformerConfig::from_hf_json(&v).map_err(|e| g.error(e.to_string()))
}

/// The Hugging Face name of GGUF tensor `name`, if it is one the Llama model uses.
pub(crate) fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = part.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// A GGUF tensor as f32 values, row-major in PyTorch order (GGUF dims reversed).
fn dequantize(g: &Gguf, t: &TensorView<'_>) -> Result<(Vec<f32>, Vec<usize>)> {
    let qtype = QType::from_ggml(t.ggml_type).ok_or_else(|| {
        g.error(format!(
            "tensor '{}' has type {}, which is not supported",
            t.name,
            ggml_type_name(t.ggml_type)
        ))
    })?;
    let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
    let cols = shape.last().copied().unwrap_or(1);
    let rows: usize = shape.iter().rev().skip(1).product();
    let m = QMatrix::new(qtype, rows, cols, t.data.to_vec())
        .map_err(|e| g.error(format!("tensor '{}': {e}", t.name)))?;
    Ok((m.dequantize(), shape))
}

/// Undo llama.cpp's rotary row permutation ([`rotary::gguf_row`]).
fn unpermute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::Config(format!(
            "cannot split {rows} rows into {heads} rotary heads"
        )));
    }
    let d = rows / heads;
    let mut out = vec![0f32; w.len()];
    for src in 0..rows {
        let dst = rotary::gguf_row(src, d);
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
    }
    Ok(out)
}

/// Load the model described by `g`, weights dequantized to `dtype` on `device`.
pub fn load_gguf(g: &Gguf, dtype: DType, device: &Device) -> Result<Transformer> {
    let (cfg, tensors) = gguf_tensors(g, dtype, device)?;
    Transformer::from_tensors(&cfg, &tensors, g.path())
}

/// The config of `g` and its tensors under Hugging Face names, dequantized to `dtype`.
pub fn gguf_tensors(
    g: &Gguf,
    dtype: DType,
    device: &Device,
) -> Result<(TransformerConfig, HashMap<String, Tensor>)> {
    let cfg = config_from_gguf(g)?;
    let mut tensors = HashMap::new();
    for t in g.tensors() {
        let Some(name) = hf_name(t.name) else {
            continue; // e.g. rope_freqs: not used by this architecture's computation
        };
        let (mut data, shape) = dequantize(g, &t)?;
        if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
            let heads = if name.ends_with("q_proj.weight") {
                cfg.num_heads
            } else {
                cfg.num_kv_heads
            };
            let rows = shape.first().copied().unwrap_or(0);
            let cols = data.len() / rows.max(1);
            data = unpermute_rows(&data, rows, cols, heads)
                .map_err(|e| g.error(format!("tensor '{}': {e}", t.name)))?;
        }
        let tensor = Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?;
        tensors.insert(name, tensor);
    }
    Ok((cfg, tensors))
}

/// Load the model described by `g` for LoRA training on a quantized base: the block projections
/// stay in their GGUF block format ([`Linear::frozen`](crate::nn::Linear::frozen), Q and K rows
/// moved into the half-split rotary order), everything else (embeddings, norms) is dequantized to
/// f32 tensors. No tensor is trainable; adapters are attached afterwards.
pub fn load_gguf_frozen(g: &Gguf) -> Result<Transformer> {
    use std::sync::Arc;
    let cfg = config_from_gguf(g)?;
    let mut tensors = HashMap::new();
    let mut frozen = HashMap::new();
    for t in g.tensors() {
        let Some(name) = hf_name(t.name) else {
            continue;
        };
        let block_proj = name.starts_with("model.layers.") && name.ends_with("_proj.weight");
        let qtype = QType::from_ggml(t.ggml_type);
        match (block_proj, qtype) {
            (true, Some(qtype)) if t.dims.len() == 2 => {
                let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
                let mut m = QMatrix::new(qtype, rows, cols, t.data.to_vec())
                    .map_err(|e| g.error(format!("tensor '{}': {e}", t.name)))?;
                let heads = if name.ends_with("q_proj.weight") {
                    Some(cfg.num_heads)
                } else if name.ends_with("k_proj.weight") {
                    Some(cfg.num_kv_heads)
                } else {
                    None
                };
                if let Some(h) = heads {
                    let d = rows / h.max(1);
                    if h == 0 || rows % h != 0 || d % 2 != 0 {
                        return Err(g.error(format!(
                            "tensor '{}': cannot split {rows} rows into {h} rotary heads",
                            t.name
                        )));
                    }
                    m = m
                        .permute_rows(|r| rotary::gguf_row(r, d))
                        .map_err(|e| g.error(format!("tensor '{}': {e}", t.name)))?;
                }
                frozen.insert(name, Arc::new(m));
            }
            _ => {
                let (data, shape) = dequantize(g, &t)?;
                tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
            }
        }
    }
    Transformer::from_parts(&cfg, &tensors, &frozen, "", g.path())
}

/// Open a GGUF file and load its model (see [`load_gguf`]).
pub fn load_gguf_file(
    path: impl AsRef<std::path::Path>,
    dtype: DType,
    device: &Device,
) -> Result<Transformer> {
    load_gguf(&Gguf::open(path)?, dtype, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map() {
        assert_eq!(
            hf_name("blk.12.attn_k.weight").unwrap(),
            "model.layers.12.self_attn.k_proj.weight"
        );
        assert_eq!(hf_name("output_norm.weight").unwrap(), "model.norm.weight");
        assert!(hf_name("rope_freqs.weight").is_none());
        assert!(hf_name("blk.x.attn_k.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        // The converter's permutation: HF row h*D + j*D/2 + i goes to GGUF row h*D + 2i + j.
        let (heads, d, cols) = (2, 4, 3);
        let rows = heads * d;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    let (src, dst) = (h * d + j * d / 2 + i, h * d + 2 * i + j);
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, rows, cols, heads).unwrap(), hf);
        assert!(unpermute_rows(&gguf, rows, cols, 3).is_err());
    }
}
