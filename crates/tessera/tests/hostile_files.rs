//! Model files whose stated sizes are absurd (a context of 2^40 positions, 2^31 heads, a vocabulary
//! of 2^40) or merely larger than memory: every loader answers with an error naming the field or
//! the buffer, never an allocation abort. The CLI side (one line on stderr, exit 1) is in
//! `tessera-cli/tests/gguf_cli.rs`.

use std::path::Path;
use tessera::infer::Decoder;
use tessera::models::gguf_loader::load_gguf_file;
use tessera::models::{Transformer, TransformerConfig};
use tessera::tasks::classify::{Classifier, HeadKind};
use tessera::util::rng::Rng;
use tessera::weights::{GgufValue, GgufWriter};
use tessera::{DType, Device};

/// A tiny Llama GGUF (1 layer, width 8, 2 heads of 4, 1 KV head, FFN 16, vocab 32, F32
/// weights) with `patch` applied to its metadata.
fn tiny_llama_gguf(dir: &Path, patch: &[(&str, GgufValue)]) -> std::path::PathBuf {
    let (c, ff, v, kvd) = (8u64, 16u64, 32u64, 4u64);
    let mut meta: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String("llama".into()),
        ),
        ("llama.embedding_length".into(), GgufValue::U64(c)),
        ("llama.block_count".into(), GgufValue::U64(1)),
        ("llama.attention.head_count".into(), GgufValue::U64(2)),
        ("llama.attention.head_count_kv".into(), GgufValue::U64(1)),
        ("llama.feed_forward_length".into(), GgufValue::U64(ff)),
        ("llama.context_length".into(), GgufValue::U64(64)),
        ("llama.rope.freq_base".into(), GgufValue::F32(10000.0)),
    ];
    for (k, val) in patch {
        meta.retain(|(m, _)| m != k);
        meta.push((k.to_string(), val.clone()));
    }
    let mut w = GgufWriter::new(3);
    for (k, val) in meta {
        w = w.kv(k, val);
    }
    let t = |n: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes())
            .collect()
    };
    let w = w
        .tensor("token_embd.weight", 0, &[c, v], t(c * v))
        .tensor("output_norm.weight", 0, &[c], t(c))
        .tensor("blk.0.attn_norm.weight", 0, &[c], t(c))
        .tensor("blk.0.ffn_norm.weight", 0, &[c], t(c))
        .tensor("blk.0.attn_q.weight", 0, &[c, c], t(c * c))
        .tensor("blk.0.attn_k.weight", 0, &[c, kvd], t(c * kvd))
        .tensor("blk.0.attn_v.weight", 0, &[c, kvd], t(c * kvd))
        .tensor("blk.0.attn_output.weight", 0, &[c, c], t(c * c))
        .tensor("blk.0.ffn_gate.weight", 0, &[c, ff], t(c * ff))
        .tensor("blk.0.ffn_up.weight", 0, &[c, ff], t(c * ff))
        .tensor("blk.0.ffn_down.weight", 0, &[ff, c], t(c * ff));
    let path = dir.join("m.gguf");
    w.write(&path).unwrap();
    path
}

const HUGE: u64 = 1 << 40;

#[test]
fn the_tiny_gguf_itself_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_llama_gguf(dir.path(), &[]);
    let m = Decoder::load(&p).unwrap();
    let mut st = m.new_state(64).unwrap();
    assert_eq!(m.forward(&mut st, &[1, 2, 3]).unwrap().len(), 32);
    load_gguf_file(&p, DType::F32, &Device::Cpu).unwrap();
}

#[test]
fn absurd_gguf_sizes_are_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, GgufValue, &str)] = &[
        (
            "llama.context_length",
            GgufValue::U64(HUGE),
            "llama.context_length",
        ),
        (
            "llama.attention.head_count",
            GgufValue::U64(1 << 31),
            "llama.attention.head_count",
        ),
        (
            "llama.attention.head_count_kv",
            GgufValue::U64(1 << 31),
            "llama.attention.head_count_kv",
        ),
        (
            "llama.embedding_length",
            GgufValue::U64(HUGE),
            "llama.embedding_length",
        ),
        (
            "llama.block_count",
            GgufValue::U64(HUGE),
            "llama.block_count",
        ),
        ("llama.vocab_size", GgufValue::U64(HUGE), "llama.vocab_size"),
        (
            "llama.feed_forward_length",
            GgufValue::U64(HUGE),
            "llama.feed_forward_length",
        ),
        (
            "llama.attention.key_length",
            GgufValue::U64(HUGE),
            "llama.attention.key_length",
        ),
        (
            "llama.context_length",
            GgufValue::U64(0),
            "llama.context_length",
        ),
        (
            "llama.block_count",
            GgufValue::U64(u64::MAX),
            "llama.block_count",
        ),
        // Within the limits, but not what the tensors hold.
        ("llama.attention.head_count", GgufValue::U64(3), "head"),
        ("llama.feed_forward_length", GgufValue::U64(1 << 20), "gate"),
    ];
    for (key, value, field) in cases {
        let p = tiny_llama_gguf(dir.path(), &[(key, value.clone())]);
        let what = format!("{key} = {value:?}");
        let e = Decoder::load(&p)
            .err()
            .unwrap_or_else(|| panic!("{what}: loaded"));
        assert!(e.to_string().contains(field), "{what}: {e}");
        let e = load_gguf_file(&p, DType::F32, &Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{what}: dense loaded"));
        assert!(e.to_string().contains(field), "{what}: {e}");
        assert!(tessera::generate::load(&p).is_err(), "{what}");
    }
}

#[test]
fn a_large_but_valid_context_gets_its_cache_or_an_error() {
    // Within the limits but far beyond this machine: the KV cache asks for it and fails cleanly.
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_llama_gguf(
        dir.path(),
        &[("llama.context_length", GgufValue::U64(1 << 24))],
    );
    let m = Decoder::load(&p).unwrap();
    // 16M positions of a 1-layer, 4-wide KV head: 128 MiB each for k and v, untouched pages.
    let mut st = m.new_state(1 << 24).unwrap();
    m.forward(&mut st, &[1, 2]).unwrap();
    // The dense model's rotary tables for 16M positions: 256 MiB, allocated and usable.
    let d = load_gguf_file(&p, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(d.cfg.max_position_embeddings, 1 << 24);
}

fn hf_dir_with(src: &str, patch: serde_json::Value) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    dir
}

#[test]
fn absurd_config_json_sizes_are_errors_naming_the_field() {
    let huge = serde_json::json!(HUGE);
    let cases = [
        (
            "tests/fixtures/hf/llama",
            "max_position_embeddings",
            huge.clone(),
        ),
        (
            "tests/fixtures/hf/llama",
            "num_attention_heads",
            serde_json::json!(1u64 << 31),
        ),
        (
            "tests/fixtures/hf/llama",
            "num_key_value_heads",
            serde_json::json!(1u64 << 31),
        ),
        ("tests/fixtures/hf/llama", "vocab_size", huge.clone()),
        ("tests/fixtures/hf/llama", "hidden_size", huge.clone()),
        ("tests/fixtures/hf/llama", "num_hidden_layers", huge.clone()),
        ("tests/fixtures/hf/llama", "intermediate_size", huge.clone()),
        ("tests/fixtures/hf/llama", "head_dim", huge.clone()),
        ("tests/fixtures/hf/gpt2", "n_positions", huge.clone()),
        ("tests/fixtures/hf/gpt2", "n_embd", huge.clone()),
        ("tests/fixtures/hf/gpt2", "n_layer", huge.clone()),
        ("tests/fixtures/hf/gpt2", "n_inner", huge.clone()),
    ];
    for (src, key, value) in cases {
        let dir = hf_dir_with(src, serde_json::json!({ key: value }));
        let e = Transformer::load_dir(dir.path(), DType::F32, &Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{src} {key}: loaded"));
        let msg = e.to_string();
        // The gpt2 names map to the Hugging Face ones in the message.
        let field = match key {
            "n_positions" => "max_position_embeddings",
            "n_embd" => "hidden_size",
            "n_layer" => "num_hidden_layers",
            "n_inner" => "intermediate_size",
            k => k,
        };
        assert!(msg.contains(field), "{src} {key}: {msg}");
    }
    for key in [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
    ] {
        let dir = hf_dir_with("tests/fixtures/bert/base", serde_json::json!({ key: HUGE }));
        let e = TransformerConfig::from_file(dir.path().join("config.json")).unwrap_err();
        assert!(e.to_string().contains(key), "{key}: {e}");
        assert!(tessera::tasks::embed::Embedder::load(dir.path(), &Device::Cpu).is_err());
    }
}

#[test]
fn sizes_within_the_limits_but_beyond_memory_fail_to_allocate_cleanly() {
    // 2^24 words × 2^16 wide: a 4 TiB embedding, for training from scratch.
    let cfg = TransformerConfig::from_hf_json(&serde_json::json!({"model_type": "bert",
        "vocab_size": 1 << 24, "hidden_size": 1 << 16, "num_hidden_layers": 1,
        "num_attention_heads": 1 << 8, "intermediate_size": 64}))
    .unwrap();
    let e = Classifier::init_scratch(&cfg, HeadKind::Sequence, 2, &mut Rng::new(1), &Device::Cpu)
        .err()
        .expect("a 4 TiB model cannot be allocated");
    assert!(e.to_string().contains("cannot allocate"), "{e}");
    let cfg = TransformerConfig::from_hf_json(&serde_json::json!({"model_type": "llama",
        "vocab_size": 1 << 24, "hidden_size": 1 << 16, "num_hidden_layers": 1,
        "num_attention_heads": 1 << 8, "intermediate_size": 64, "max_position_embeddings": 64}))
    .unwrap();
    let e = tessera::models::ParamStore::init(&cfg, &mut Rng::new(1), DType::F32, &Device::Cpu)
        .err()
        .expect("a 4 TiB model cannot be allocated");
    assert!(e.to_string().contains("cannot allocate"), "{e}");
}

#[test]
fn a_tokenizer_json_that_made_the_tokenizers_crate_panic_is_an_error() {
    // Found by the `tokenizer_json` fuzz target: malformed JSON inside the "decoder" object,
    // on which `tokenizers::Tokenizer::from_bytes` panics instead of returning an error.
    // The second has only a bad escape (a lone surrogate) there.
    for name in [
        "tokenizer_decoder_panic.json",
        "tokenizer_decoder_panic_escape.json",
    ] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let e = tessera::tokenizer::Tokenizer::from_file(&p).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{name}: {e}");
    }
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_decoder_panic.json");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&p, dir.path().join("tokenizer.json")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert/base/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    assert!(tessera::tasks::embed::Embedder::load(dir.path(), &Device::Cpu).is_err());
}
