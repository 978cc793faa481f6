//! A checkpoint written by `tessera train` gives the same logits in Hugging Face transformers.
//!
//! Fixture: `fixtures/hf/` holds two checkpoints made by `tessera train` (GPT-2 and Llama families,
//! the Llama one with grouped-query attention and an untied head) and `hf_logits.json`, the logits
//! transformers computed after loading them as `GPT2LMHeadModel` / `LlamaForCausalLM`
//! (made by `scripts/hf_parity.py`).
//!
//! Tolerance: 1e-4 absolute. Both sides are fp32 on the CPU; they differ only in summation order
//! inside matmuls and reductions (a few ulps per op, ~1e-6 on logits of magnitude ~5 here).

use std::path::PathBuf;
use tessera::models::Transformer;
use tessera::tokenizer::Tokenizer;
use tessera::{DType, Device, Tensor};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn check_model(name: &str, class: &str) {
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("hf_logits.json")).unwrap(),
    )
    .unwrap();
    let entry = &fx["models"][name];
    assert_eq!(entry["class"], class);
    let dir = fixture_dir().join(name);
    let model = Transformer::load_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let text_ids: Vec<u32> = serde_json::from_value(entry["text_ids"].clone()).unwrap();
    assert_eq!(
        tok.encode(entry["text"].as_str().unwrap()).unwrap(),
        text_ids,
        "tokenizer ids differ from HF"
    );
    // The inference backend on the same directory (what generate, chat and eval perplexity run).
    let engine = tessera::infer::Decoder::load(&dir).unwrap();
    let mut worst = 0f32;
    let mut worst_engine = 0f32;
    for case in entry["cases"].as_array().unwrap() {
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let got: Vec<Vec<f32>> = model
            .forward(&input)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((a - b).abs());
            }
        }
        let mut st = engine.new_state(ids.len()).unwrap();
        let rows = engine.forward_all(&mut st, &ids).unwrap();
        for (g, w) in rows.chunks_exact(want[0].len()).zip(&want) {
            for (a, b) in g.iter().zip(w) {
                worst_engine = worst_engine.max((a - b).abs());
            }
        }
    }
    assert!(
        worst < 1e-4,
        "{name}: max |logit difference| {worst} vs transformers"
    );
    assert!(
        worst_engine < 1e-4,
        "{name}: inference backend: max |logit difference| {worst_engine} vs transformers"
    );
}

#[test]
fn gpt2_checkpoint_matches_transformers() {
    check_model("gpt2", "GPT2LMHeadModel");
}

#[test]
fn llama_checkpoint_matches_transformers() {
    check_model("llama", "LlamaForCausalLM");
}
