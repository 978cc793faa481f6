//! LoRA adapters merged into a GGUF model: in the inference backend (`Decoder::apply_adapter`,
//! what `tessera chat/generate --adapter` run) and into a new GGUF file (`gguf_merge`, what
//! `tessera export` writes).
//!
//! The reference is the tensor model with the adapter beside each projection (`lora::attach`:
//! `x Wᵀ + s (x Aᵀ) Bᵀ`, the training path, in f32), which shares neither the merge nor the row
//! permutation with the code under test. Most checks run on a tiny random Llama written as a GGUF
//! here (Q4_1 blocks, a Q8_0 embedding, grouped-query heads, rotary Q/K rows in llama.cpp's
//! interleaved order); one runs them on SmolLM2-135M-Instruct (fetched into the model cache on
//! first use, as the other golden tests do).

use std::collections::HashMap;
use std::path::Path;
use tessera::infer::Decoder;
use tessera::kernels::quant::dequant::dequantize_into;
use tessera::kernels::quant::{quantize, QType};
use tessera::models::gguf_loader::{config_from_gguf, load_gguf};
use tessera::models::gguf_merge::{export_gguf, merge_gguf};
use tessera::models::lora::{self, Adapter, BaseId, LoraConfig};
use tessera::models::TransformerConfig;
use tessera::util::rng::Rng;
use tessera::weights::{Gguf, GgufValue, GgufWriter};
use tessera::{DType, Device, Tensor};

const TOL: f32 = 1e-4;

/// A random Llama as a GGUF image: hidden 64, 2 query heads of 32 sharing one key/value head,
/// MLP 96, 2 blocks, 80 tokens, tied head; projections Q4_1, embedding Q8_0, norms F32.
fn tiny_gguf() -> Vec<u8> {
    let (c, ff, layers, vocab) = (64u64, 96u64, 2, 80u64);
    let (heads, kv_heads, d) = (2u64, 1u64, 32u64);
    let mut rng = Rng::new(7);
    let mut randn =
        |n: u64, std: f64| -> Vec<f32> { (0..n).map(|_| (rng.normal() * std) as f32).collect() };
    let mut w = GgufWriter::new(3)
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("general.name", GgufValue::String("tiny".into()))
        .kv("general.file_type", GgufValue::U32(3))
        .kv("llama.context_length", GgufValue::U32(64))
        .kv("llama.embedding_length", GgufValue::U32(c as u32))
        .kv("llama.block_count", GgufValue::U32(layers))
        .kv("llama.feed_forward_length", GgufValue::U32(ff as u32))
        .kv("llama.attention.head_count", GgufValue::U32(heads as u32))
        .kv(
            "llama.attention.head_count_kv",
            GgufValue::U32(kv_heads as u32),
        )
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(1e-5),
        )
        .kv("llama.rope.freq_base", GgufValue::F32(10000.0))
        .kv("llama.vocab_size", GgufValue::U32(vocab as u32));
    let q = |t: QType, x: &[f32]| quantize(t, x).unwrap();
    w = w.tensor(
        "token_embd.weight",
        QType::Q8_0.ggml_id(),
        &[c, vocab],
        q(QType::Q8_0, &randn(c * vocab, 1.0)),
    );
    let norm = |v: Vec<f32>| -> Vec<u8> {
        v.iter()
            .flat_map(|x| (1.0 + x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    for l in 0..layers {
        let mats = [
            ("attn_q", c, heads * d),
            ("attn_k", c, kv_heads * d),
            ("attn_v", c, kv_heads * d),
            ("attn_output", heads * d, c),
            ("ffn_gate", c, ff),
            ("ffn_up", c, ff),
            ("ffn_down", ff, c),
        ];
        w = w.tensor(
            format!("blk.{l}.attn_norm.weight"),
            0,
            &[c],
            norm(randn(c, 0.1)),
        );
        w = w.tensor(
            format!("blk.{l}.ffn_norm.weight"),
            0,
            &[c],
            norm(randn(c, 0.1)),
        );
        for (name, cols, rows) in mats {
            let std = 1.0 / (cols as f64).sqrt();
            w = w.tensor(
                format!("blk.{l}.{name}.weight"),
                QType::Q4_1.ggml_id(),
                &[cols, rows],
                q(QType::Q4_1, &randn(cols * rows, std)),
            );
        }
    }
    w = w.tensor("output_norm.weight", 0, &[c], norm(randn(c, 0.1)));
    w.to_bytes().unwrap()
}

/// A random adapter of `rank` on every projection of `cfg`'s blocks (B non-zero), saved in `dir`
/// for a base of `base`'s shape and name.
fn random_adapter(cfg: &TransformerConfig, base: BaseId, rank: usize, std: f64, dir: &Path) {
    let lora = LoraConfig::new(rank, 2.0 * rank as f64, &["all".to_string()], cfg).unwrap();
    let mut rng = Rng::new(11);
    let mut tensors = HashMap::new();
    for spec in lora.specs(cfg).unwrap() {
        let n: usize = spec.shape.iter().product();
        let (rows, cols) = (spec.shape[0], spec.shape[1]);
        // A as PEFT draws it (uniform on ±1/√in), B as after some training.
        let v: Vec<f32> = if spec.name.contains("lora_A") {
            let bound = 1.0 / (cols as f64).sqrt();
            (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect()
        } else {
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        };
        tensors.insert(
            spec.name,
            Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap(),
        );
    }
    Adapter {
        lora,
        base,
        tensors,
    }
    .save(dir, cfg)
    .unwrap();
}

/// (T, V) logits of the tensor model on `ids`, flattened.
fn tensor_logits(model: &tessera::models::Transformer, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&input)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// (T, V) logits of the inference backend on `ids`, flattened.
fn decoder_logits(model: &Decoder, ids: &[u32]) -> Vec<f32> {
    let mut st = model.new_state(ids.len()).unwrap();
    model.forward_all(&mut st, ids).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The tensor model of `g` in f32 with `adapter` attached (the reference), and without it.
fn reference(
    g: &Gguf,
    adapter: &Adapter,
) -> (tessera::models::Transformer, tessera::models::Transformer) {
    let base = load_gguf(g, DType::F32, &Device::Cpu).unwrap();
    let mut adapted = base.clone();
    lora::attach(&mut adapted, &adapter.lora, &adapter.tensors).unwrap();
    (adapted, base)
}

/// Every check on one model file: the merged decoder and the exported f32 file against the
/// reference; the export in the source types (types kept, untouched tensors byte-identical,
/// merged ones within a quantization step of the f32 export). Returns the largest differences.
fn check_model(path: &Path, base_name: &str, ids: &[u32], tmp: &Path) -> (f32, f32) {
    let g = Gguf::open(path).unwrap();
    let cfg = config_from_gguf(&g).unwrap();
    // The tensors carry PEFT's names.
    assert_eq!(
        lora::peft_name(&lora::module_of(&cfg, 0, "q"), "A"),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    let dir = tmp.join("adapter");
    random_adapter(&cfg, BaseId::of(base_name, &cfg), 4, 0.05, &dir);
    let adapter = Adapter::load(&dir, base_name, &cfg).unwrap();
    let (reference, base) = reference(&g, &adapter);
    let want = tensor_logits(&reference, ids);
    let base_logits = tensor_logits(&base, ids);
    let moved = max_diff(&want, &base_logits);
    assert!(
        moved > 0.05,
        "the adapter should change the logits (by {moved})"
    );
    drop(base);
    // How far llama.cpp's arithmetic on the quantized matrices is from the f32 tensor model.
    let arith = max_diff(
        &decoder_logits(&Decoder::load(path).unwrap(), ids),
        &base_logits,
    );

    // (a) merged into the decoder: the merged matrices are f32; with every other matrix
    // dequantized too and f32 arithmetic, the reference's logits.
    let mut dec = Decoder::load(path).unwrap();
    dec.apply_adapter(&adapter).unwrap();
    let merged = decoder_logits(&dec.dequantized().unwrap(), ids);
    let da = max_diff(&merged, &want);
    assert!(
        da < TOL,
        "apply_adapter vs the tensor model with LoRA: {da}"
    );
    // The quantized decoder (llama.cpp's arithmetic on the untouched matrices) is as far from
    // the reference as it is without the adapter.
    let dq = max_diff(&decoder_logits(&dec, ids), &want);
    assert!(
        dq < 2.0 * arith + 0.05,
        "quantized decoder with the adapter: {dq} (without: {arith})"
    );
    drop(dec);

    // (b) exported as f32, loaded back.
    let out = tmp.join("merged-f32.gguf");
    let s = export_gguf(&g, Some(&adapter), Some(QType::F32), &out).unwrap();
    assert_eq!(s.merged, cfg.num_layers * 7);
    let exported = Gguf::open(&out).unwrap();
    assert_eq!(exported.get_u64("general.file_type").unwrap(), Some(0));
    for t in exported.tensors() {
        assert_eq!(t.ggml_type, 0, "{} is not f32", t.name);
    }
    let dec = Decoder::load(&out).unwrap();
    let db = max_diff(&decoder_logits(&dec.dequantized().unwrap(), ids), &want);
    assert!(
        db < TOL,
        "exported f32 file vs the tensor model with LoRA: {db}"
    );
    drop(dec);

    // Exported in the source types: the same types, untouched tensors byte for byte, merged
    // ones the f32 export's values within one quantization step of their blocks.
    let (w, s) = merge_gguf(&g, Some(&adapter), None).unwrap();
    assert_eq!((s.merged, s.converted), (cfg.num_layers * 7, 0));
    let same_types = Gguf::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(same_types.metadata(), g.metadata());
    for (t, src) in same_types.tensors().zip(g.tensors()) {
        assert_eq!(
            (t.name, t.ggml_type, t.dims),
            (src.name, src.ggml_type, src.dims)
        );
        let is_merged = t.name.starts_with("blk.") && !t.name.ends_with("norm.weight");
        if !is_merged {
            assert!(t.data == src.data, "{} changed", t.name);
            continue;
        }
        let qt = QType::from_ggml(t.ggml_type).unwrap();
        let n = t.dims.iter().product::<u64>() as usize;
        let mut got = vec![0f32; n];
        dequantize_into(qt, t.data, &mut got);
        let f = exported.tensor(t.name).unwrap();
        let mut exact = vec![0f32; n];
        dequantize_into(QType::F32, f.data, &mut exact);
        for (gb, eb) in got.chunks(32).zip(exact.chunks(32)) {
            let lo = eb.iter().cloned().fold(f32::MAX, f32::min);
            let hi = eb.iter().cloned().fold(f32::MIN, f32::max);
            let step = (hi - lo) / 15.0;
            for (x, y) in gb.iter().zip(eb) {
                assert!(
                    (x - y).abs() <= 0.5 * step * 1.01 + 4e-3 * hi.abs().max(lo.abs()),
                    "{}: {x} vs {y} (step {step})",
                    t.name
                );
            }
        }
    }
    (da, db)
}

#[test]
fn tiny_model_merged_and_exported_equal_the_tensor_model_with_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny.gguf");
    std::fs::write(&path, tiny_gguf()).unwrap();
    let (da, db) = check_model(&path, "tiny", &[1, 5, 9, 42, 7, 79, 0, 13], tmp.path());
    eprintln!("tiny: apply_adapter {da:.2e}, export f32 {db:.2e}");
}

#[test]
fn smollm2_merged_and_exported_equal_the_tensor_model_with_lora() {
    let path = tessera::hub::resolve("smollm2-135m-instruct").expect("fetch smollm2-135m-instruct");
    let tmp = tempfile::tempdir().unwrap();
    // "<|im_start|>user\nWhat is 2+2?" and a few more tokens.
    let ids = [1u32, 4093, 198, 1780, 314, 216, 34, 31, 34, 47];
    let (da, db) = check_model(&path, "smollm2-135m-instruct", &ids, tmp.path());
    eprintln!("smollm2: apply_adapter {da:.2e}, export f32 {db:.2e}");
}

/// (c) Without an adapter or a type, the export is the source: every metadata entry and every
/// tensor's name, type, dimensions and bytes.
#[test]
fn export_without_adapter_or_type_copies_every_tensor() {
    let path = tessera::hub::resolve("smollm2-135m-instruct").expect("fetch smollm2-135m-instruct");
    let g = Gguf::open(&path).unwrap();
    let (w, s) = merge_gguf(&g, None, None).unwrap();
    assert_eq!(s.copied, g.tensor_infos().len());
    let bytes = w.to_bytes().unwrap();
    let copy = Gguf::from_bytes(bytes.clone()).unwrap();
    assert_eq!(copy.version(), g.version());
    assert_eq!(copy.alignment(), g.alignment());
    assert_eq!(copy.metadata(), g.metadata());
    assert_eq!(copy.tensor_infos().len(), g.tensor_infos().len());
    for (a, b) in copy.tensors().zip(g.tensors()) {
        assert_eq!((a.name, a.ggml_type, a.dims), (b.name, b.ggml_type, b.dims));
        assert!(a.data == b.data, "{}: tensor bytes differ", a.name);
    }
    let whole = std::fs::read(&path).unwrap() == bytes;
    eprintln!("whole file byte-identical: {whole}");
}

/// `--type`: every matrix in the new type (those already in it copied), norms as they were,
/// `general.file_type` renamed; the converted model computes what the source does, within the
/// quantization.
#[test]
fn export_to_a_type_converts_every_matrix() {
    let src = Gguf::from_bytes(tiny_gguf()).unwrap();
    let (w, s) = merge_gguf(&src, None, Some(QType::Q8_0)).unwrap();
    // 2 blocks x 7 projections converted; the Q8_0 embedding and 5 norms copied.
    assert_eq!((s.merged, s.converted, s.copied), (0, 14, 6));
    let out = Gguf::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(out.get_u64("general.file_type").unwrap(), Some(7));
    for (t, s) in out.tensors().zip(src.tensors()) {
        if t.dims.len() == 2 {
            assert_eq!(t.ggml_type, QType::Q8_0.ggml_id(), "{}", t.name);
            // The source's values within half a Q8_0 step of their block.
            let n = t.dims.iter().product::<u64>() as usize;
            let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
            dequantize_into(QType::from_ggml(s.ggml_type).unwrap(), s.data, &mut x);
            dequantize_into(QType::Q8_0, t.data, &mut y);
            for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (a, b) in xb.iter().zip(yb) {
                    assert!((a - b).abs() <= amax * (0.5 / 127.0 + 2e-3), "{}", t.name);
                }
            }
        } else {
            assert!(t.ggml_type == 0 && t.data == s.data, "{}", t.name);
        }
    }
    assert!(
        out.tensor("token_embd.weight").unwrap().data
            == src.tensor("token_embd.weight").unwrap().data
    );
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("src.gguf"), tmp.path().join("q8.gguf"));
    std::fs::write(&a, tiny_gguf()).unwrap();
    w.write(&b).unwrap();
    let ids = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let before = decoder_logits(&Decoder::load(&a).unwrap(), &ids);
    let scale = before.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_diff(&before, &decoder_logits(&Decoder::load(&b).unwrap(), &ids));
    assert!(
        d < 0.05 * scale,
        "q4_1 -> q8_0 moved the logits by {d} (largest {scale})"
    );
    // Overwriting the source is refused.
    let e = export_gguf(&Gguf::open(&a).unwrap(), None, Some(QType::F16), &a)
        .unwrap_err()
        .to_string();
    assert!(e.contains("replace the model"), "{e}");
}

/// (d) An adapter trained on a model of another shape is refused, naming both models; so is one
/// whose tensors do not fit.
#[test]
fn adapter_of_another_model_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Gguf::from_bytes(tiny_gguf()).unwrap();
    let cfg = config_from_gguf(&g).unwrap();
    let mut other = BaseId::of("other-model", &cfg);
    other.num_layers += 1;
    let dir = tmp.path().join("other");
    random_adapter(&cfg, other, 2, 0.05, &dir);
    let e = Adapter::load(&dir, "tiny-base", &cfg)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("other-model") && e.contains("tiny-base"), "{e}");
    assert!(e.contains("3 layers") && e.contains("2 layers"), "{e}");
}

/// `apply_adapter` on models built from Hugging Face-layout tensors (f32, transformers'
/// arithmetic): GPT-2 (one fused `qkv` projection, split into the backend's q, k and v; Conv1D
/// weights) and Llama (grouped-query heads, gated MLP) equal the tensor model with the adapter.
#[test]
fn merged_decoder_equals_the_tensor_model_for_each_layout() {
    let gpt2 = serde_json::json!({"model_type": "gpt2", "vocab_size": 50, "n_embd": 32,
        "n_layer": 2, "n_head": 4, "n_positions": 64});
    let llama = serde_json::json!({"model_type": "llama", "vocab_size": 50, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 48, "max_position_embeddings": 64});
    let tmp = tempfile::tempdir().unwrap();
    for (name, json) in [("gpt2", gpt2), ("llama", llama)] {
        let cfg = TransformerConfig::from_hf_json(&json).unwrap();
        let p = tessera::models::ParamStore::init(&cfg, &mut Rng::new(3), DType::F32, &Device::Cpu)
            .unwrap();
        let dir = tmp.path().join(name);
        random_adapter(&cfg, BaseId::of(name, &cfg), 3, 0.2, &dir);
        let adapter = Adapter::load(&dir, name, &cfg).unwrap();
        let mut reference = tessera::models::Transformer::from_params(&cfg, &p).unwrap();
        let ids = [3u32, 9, 27, 1, 0, 44, 17, 8];
        let base = tensor_logits(&reference, &ids);
        lora::attach(&mut reference, &adapter.lora, &adapter.tensors).unwrap();
        let want = tensor_logits(&reference, &ids);
        let moved = max_diff(&want, &base);
        assert!(
            moved > 1e-2,
            "{name}: the adapter moved the logits by {moved}"
        );
        let mut dec = Decoder::from_tensors(&cfg, &p.tensors(), Path::new(name)).unwrap();
        dec.apply_adapter(&adapter).unwrap();
        let d = max_diff(&decoder_logits(&dec, &ids), &want);
        assert!(
            d < 1e-5,
            "{name}: merged decoder vs tensor model with LoRA: {d}"
        );
    }
}
