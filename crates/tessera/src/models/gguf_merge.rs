//! Write a GGUF model with a LoRA adapter merged into its weights (`tessera export`), or the
//! model re-quantized to another type.
//!
//! Every metadata entry and every tensor of the source file is copied in order. An adapted
//! projection `blk.L.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight` becomes
//! `quantize(type, dequantize(W) + scale·B·A)`; the adapter's deltas come in Hugging Face row
//! order, so the rows of a Q or K delta are first moved back into the interleaved rotary order
//! llama.cpp's converter wrote (the inverse of the un-permutation at load,
//! [`rotary::gguf_row`]) and the sum is taken in GGUF row order. Without a target type an adapted
//! tensor keeps its source type and every other tensor is copied byte for byte; with one, every
//! 2-D weight (the embeddings included) is written in that type, 1-D tensors (norms) as they are,
//! and `general.file_type`, if present, names the new type.
//!
//! The output is the file llama.cpp would load for the merged model: its quantizers are GGML's
//! reference formulas ([`quantize`]).

use super::config::TransformerConfig;
use super::gguf_loader::{config_from_gguf, hf_name};
use super::lora::Adapter;
use crate::kernels::quant::dequant::dequantize_into;
use crate::kernels::quant::{quantize, QType};
use crate::kernels::rotary;
use crate::weights::{ggml_type_name, Gguf, GgufValue, GgufWriter, TensorInfo};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The types `--type` may name (those with a quantizer).
pub const EXPORT_TYPES: [QType; 8] = [
    QType::F32,
    QType::F16,
    QType::BF16,
    QType::Q8_0,
    QType::Q5_0,
    QType::Q5_1,
    QType::Q4_0,
    QType::Q4_1,
];

/// The type named `s` (`q4_1`, `Q8_0`, `f16`, ...), if export can write it.
pub fn parse_type(s: &str) -> Result<QType> {
    let want = s.trim().to_ascii_lowercase();
    EXPORT_TYPES
        .iter()
        .copied()
        .find(|t| t.name() == want)
        .ok_or_else(|| {
            let names: Vec<&str> = EXPORT_TYPES.iter().map(|t| t.name()).collect();
            Error::Input(format!(
                "unknown tensor type '{s}' (export writes {})",
                names.join(", ")
            ))
        })
}

/// llama.cpp's `general.file_type` (`llama_ftype`) of a model whose weights are `t`.
pub fn file_type_of(t: QType) -> Option<u32> {
    Some(match t {
        QType::F32 => 0,
        QType::F16 => 1,
        QType::Q4_0 => 2,
        QType::Q4_1 => 3,
        QType::Q8_0 => 7,
        QType::Q5_0 => 8,
        QType::Q5_1 => 9,
        QType::BF16 => 32,
        _ => return None,
    })
}

/// What [`merge_gguf`] did with the tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Projections with the adapter's delta added.
    pub merged: usize,
    /// Other tensors converted to the target type.
    pub converted: usize,
    /// Tensors copied byte for byte.
    pub copied: usize,
}

/// What happens to one tensor.
enum Action<'a> {
    Copy,
    Convert(QType),
    Merge {
        layer: usize,
        part: &'a str,
        to: QType,
    },
}

/// The source file with `adapter` merged (if any) and the weights converted to `qtype` (if
/// given), as a writer ready for [`GgufWriter::write`]. See the module documentation.
pub fn merge_gguf(
    src: &Gguf,
    adapter: Option<&Adapter>,
    qtype: Option<QType>,
) -> Result<(GgufWriter, MergeSummary)> {
    use rayon::prelude::*;
    let cfg = config_from_gguf(src)?;
    if let Some(t) = qtype {
        if !EXPORT_TYPES.contains(&t) {
            return Err(Error::Input(format!("export cannot write {t} tensors")));
        }
    }
    // GGUF name -> (layer, part) of every adapted projection, found through the loader's
    // GGUF -> Hugging Face name map (the adapter names modules by their Hugging Face names).
    let mut adapted: HashMap<String, (usize, &str)> = HashMap::new();
    if let Some(a) = adapter {
        let mut wanted: HashMap<String, (usize, &str)> = HashMap::new();
        for part in &a.lora.targets {
            for l in 0..cfg.num_layers {
                let module = super::lora::module_of(&cfg, l, part);
                wanted.insert(format!("{module}.weight"), (l, part.as_str()));
            }
        }
        for info in src.tensor_infos() {
            if let Some(at) = hf_name(&info.name).and_then(|h| wanted.remove(&h)) {
                adapted.insert(info.name.clone(), at);
            }
        }
        if let Some(missing) = wanted.keys().min() {
            return Err(src.error(format!(
                "the adapted projection '{missing}' has no tensor in this file"
            )));
        }
    }
    let source_type = |info: &TensorInfo| -> Result<QType> {
        QType::from_ggml(info.ggml_type).ok_or_else(|| {
            src.error(format!(
                "tensor '{}' has type {}, which tessera cannot read",
                info.name,
                ggml_type_name(info.ggml_type)
            ))
        })
    };
    let mut plan = Vec::with_capacity(src.tensor_infos().len());
    for info in src.tensor_infos() {
        let action = match adapted.get(&info.name) {
            Some(&(layer, part)) => Action::Merge {
                layer,
                part,
                to: match qtype {
                    Some(t) => t,
                    None => source_type(info)?,
                },
            },
            None => match qtype {
                Some(t) if info.dims.len() == 2 && info.ggml_type != t.ggml_id() => {
                    Action::Convert(t)
                }
                _ => Action::Copy,
            },
        };
        plan.push((info, action));
    }
    let tensors: Vec<Vec<u8>> = plan
        .par_iter()
        .map(|(info, action)| -> Result<Vec<u8>> {
            let data = src
                .tensor(&info.name)
                .ok_or_else(|| src.error(format!("missing tensor '{}'", info.name)))?
                .data;
            match *action {
                Action::Copy => Ok(data.to_vec()),
                Action::Convert(to) => {
                    let w = dequantize(src, info, source_type(info)?, data)?;
                    encode(src, info, to, &w)
                }
                Action::Merge { layer, part, to } => {
                    let a = adapter.expect("merges come from an adapter");
                    let mut w = dequantize(src, info, source_type(info)?, data)?;
                    add_delta(src, info, &cfg, a, layer, part, &mut w)?;
                    encode(src, info, to, &w)
                }
            }
        })
        .collect::<Result<_>>()?;
    let mut summary = MergeSummary::default();
    let mut out = GgufWriter::new(src.version());
    for (key, value) in src.metadata() {
        let value = match (key.as_str(), qtype.and_then(file_type_of)) {
            ("general.file_type", Some(ft)) => match value {
                GgufValue::I32(_) => GgufValue::I32(ft as i32),
                GgufValue::U64(_) => GgufValue::U64(ft as u64),
                GgufValue::I64(_) => GgufValue::I64(ft as i64),
                _ => GgufValue::U32(ft),
            },
            _ => value.clone(),
        };
        out = out.kv(key.clone(), value);
    }
    for ((info, action), data) in plan.iter().zip(tensors) {
        let ty = match action {
            Action::Copy => {
                summary.copied += 1;
                info.ggml_type
            }
            Action::Convert(t) => {
                summary.converted += 1;
                t.ggml_id()
            }
            Action::Merge { to, .. } => {
                summary.merged += 1;
                to.ggml_id()
            }
        };
        out = out.tensor(info.name.clone(), ty, &info.dims, data);
    }
    Ok((out, summary))
}

/// [`merge_gguf`] written atomically to `out` (which must not be the source file).
pub fn export_gguf(
    src: &Gguf,
    adapter: Option<&Adapter>,
    qtype: Option<QType>,
    out: &Path,
) -> Result<MergeSummary> {
    let same = match (
        std::fs::canonicalize(src.path()),
        std::fs::canonicalize(out),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::Input(format!(
            "{}: the output would replace the model it is read from; choose another --out",
            out.display()
        )));
    }
    let (w, summary) = merge_gguf(src, adapter, qtype)?;
    w.write(out)?;
    Ok(summary)
}

/// (rows, cols) of a 2-D GGUF tensor (GGUF lists the fastest dimension first).
fn matrix_dims(src: &Gguf, info: &TensorInfo) -> Result<(usize, usize)> {
    match info.dims.as_slice() {
        &[cols, rows] => Ok((rows as usize, cols as usize)),
        d => Err(src.error(format!(
            "tensor '{}' has dims {d:?}, expected a matrix",
            info.name
        ))),
    }
}

/// A tensor's values as f32, in its stored order.
fn dequantize(src: &Gguf, info: &TensorInfo, t: QType, data: &[u8]) -> Result<Vec<f32>> {
    let n = usize::try_from(info.n_elements())
        .map_err(|_| src.error(format!("tensor '{}' is too large", info.name)))?;
    if t.bytes_for(n) != Some(data.len()) {
        return Err(src.error(format!(
            "tensor '{}': {n} {t} values do not take {} bytes",
            info.name,
            data.len()
        )));
    }
    let mut w = crate::util::alloc::zeroed(n, &format!("tensor '{}' as f32", info.name))?;
    dequantize_into(t, data, &mut w);
    Ok(w)
}

/// `w` (a tensor of `info`'s shape) in type `t`.
fn encode(src: &Gguf, info: &TensorInfo, t: QType, w: &[f32]) -> Result<Vec<u8>> {
    let cols = info.dims.first().copied().unwrap_or(1) as usize;
    if !cols.is_multiple_of(t.block_elems()) {
        return Err(src.error(format!(
            "tensor '{}' has rows of {cols} values, not a whole number of {t} blocks of {}",
            info.name,
            t.block_elems()
        )));
    }
    quantize(t, w).map_err(|e| {
        src.error(format!(
            "tensor '{}': {e}; choose a type export can write (--type {})",
            info.name,
            EXPORT_TYPES.map(|t| t.name()).join(", ")
        ))
    })
}

/// `w += delta` for projection `part` of block `layer`, `w` in GGUF row order (Q and K rows in
/// llama.cpp's interleaved rotary order, the delta's rows moved there first).
fn add_delta(
    src: &Gguf,
    info: &TensorInfo,
    cfg: &TransformerConfig,
    adapter: &Adapter,
    layer: usize,
    part: &str,
    w: &mut [f32],
) -> Result<()> {
    let (rows, cols) = matrix_dims(src, info)?;
    let delta = adapter.delta(cfg, layer, part)?.ok_or_else(|| {
        Error::Input(format!(
            "the adapter has no delta for '{part}' of block {layer}"
        ))
    })?;
    if delta.len() != rows * cols {
        return Err(Error::Input(format!(
            "the adapter's delta of '{}' has {} values, the tensor {rows}x{cols}",
            info.name,
            delta.len()
        )));
    }
    let d = cfg.head_dim;
    let rotary = matches!(part, "q" | "k");
    if rotary && (d == 0 || !d.is_multiple_of(2) || !rows.is_multiple_of(d)) {
        return Err(src.error(format!(
            "tensor '{}': {rows} rows are not whole rotary heads of {d}",
            info.name
        )));
    }
    for (r, row) in w.chunks_exact_mut(cols).enumerate() {
        // GGUF row r holds Hugging Face row gguf_row(r) of a Q or K projection.
        let h = if rotary { rotary::gguf_row(r, d) } else { r };
        for (x, dx) in row.iter_mut().zip(&delta[h * cols..(h + 1) * cols]) {
            *x += dx;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::lora::LoraConfig;
    use super::*;

    #[test]
    fn parses_the_export_types() {
        assert_eq!(parse_type("q4_1").unwrap(), QType::Q4_1);
        assert_eq!(parse_type("Q8_0").unwrap(), QType::Q8_0);
        assert_eq!(parse_type(" f16 ").unwrap(), QType::F16);
        let e = parse_type("q4_K").unwrap_err().to_string();
        assert!(e.contains("q4_K") && e.contains("q8_0"), "{e}");
        for t in EXPORT_TYPES {
            assert_eq!(parse_type(t.name()).unwrap(), t);
            assert!(file_type_of(t).is_some());
        }
    }

    /// A one-block Llama GGUF with f32 Q and K matrices (2 heads of 32 sharing 1 key/value head),
    /// and an adapter on both.
    fn tiny() -> (Gguf, Adapter) {
        use super::super::lora::BaseId;
        use candle_core::{Device, Tensor};
        let (c, d) = (64usize, 32usize);
        let f32s = |n: usize, seed: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| (((i * 7919 + seed) % 211) as f32 / 211.0 - 0.5).to_le_bytes())
                .collect()
        };
        let g = GgufWriter::new(3)
            .kv("general.architecture", GgufValue::String("llama".into()))
            .kv("llama.context_length", GgufValue::U32(16))
            .kv("llama.embedding_length", GgufValue::U32(c as u32))
            .kv("llama.block_count", GgufValue::U32(1))
            .kv("llama.feed_forward_length", GgufValue::U32(64))
            .kv("llama.attention.head_count", GgufValue::U32(2))
            .kv("llama.attention.head_count_kv", GgufValue::U32(1))
            .tensor("token_embd.weight", 0, &[c as u64, 8], f32s(c * 8, 1))
            .tensor(
                "blk.0.attn_q.weight",
                0,
                &[c as u64, 2 * d as u64],
                f32s(2 * d * c, 2),
            )
            .tensor(
                "blk.0.attn_k.weight",
                0,
                &[c as u64, d as u64],
                f32s(d * c, 3),
            )
            .to_bytes()
            .unwrap();
        let g = Gguf::from_bytes(g).unwrap();
        let cfg = config_from_gguf(&g).unwrap();
        let lora = LoraConfig::new(2, 4.0, &["q".into(), "k".into()], &cfg).unwrap();
        let tensors = lora
            .specs(&cfg)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(k, s)| {
                let n: usize = s.shape.iter().product();
                let v: Vec<f32> = (0..n)
                    .map(|i| ((i * 31 + k) % 17) as f32 / 17.0 - 0.4)
                    .collect();
                (s.name, Tensor::from_vec(v, s.shape, &Device::Cpu).unwrap())
            })
            .collect();
        let base = BaseId::of("tiny", &cfg);
        (
            g,
            Adapter {
                lora,
                base,
                tensors,
            },
        )
    }

    #[test]
    fn q_and_k_deltas_are_added_in_gguf_row_order() {
        use crate::kernels::quant::QMatrix;
        let (g, a) = tiny();
        let cfg = config_from_gguf(&g).unwrap();
        let (w, s) = merge_gguf(&g, Some(&a), None).unwrap();
        assert_eq!((s.merged, s.converted, s.copied), (2, 0, 1));
        let out = Gguf::from_bytes(w.to_bytes().unwrap()).unwrap();
        for (name, part) in [("blk.0.attn_q.weight", "q"), ("blk.0.attn_k.weight", "k")] {
            // Loaded as the backend loads it (rows un-permuted into Hugging Face order), the
            // merged matrix is the loaded source plus the delta.
            let hf = |g: &Gguf| -> Vec<f32> {
                let t = g.tensor(name).unwrap();
                let (rows, cols) = (t.dims[1] as usize, t.dims[0] as usize);
                QMatrix::new(QType::F32, rows, cols, t.data.to_vec())
                    .unwrap()
                    .permute_rows(|r| rotary::gguf_row(r, cfg.head_dim))
                    .unwrap()
                    .dequantize()
            };
            let delta = a.delta(&cfg, 0, part).unwrap().unwrap();
            assert!(delta.iter().any(|&x| x != 0.0));
            for ((m, w), d) in hf(&out).iter().zip(hf(&g)).zip(&delta) {
                assert_eq!(*m, w + d, "{name}");
            }
        }
        // The untouched embedding is the same bytes.
        assert_eq!(
            out.tensor("token_embd.weight").unwrap().data,
            g.tensor("token_embd.weight").unwrap().data
        );
    }

    #[test]
    fn types_without_a_quantizer_are_refused() {
        let (g, a) = tiny();
        // K-quants have no quantizer here.
        assert!(merge_gguf(&g, Some(&a), Some(QType::Q4K)).is_err());
        let e = match merge_gguf(&g, None, Some(QType::Q6K)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("q6_K accepted"),
        };
        assert!(e.contains("q6_K"), "{e}");
    }
}
