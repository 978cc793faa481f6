//! The BERT encoder and sentence embeddings against the sentence-transformers fixture
//! (`fixtures/reference/minilm_embeddings.json`): token ids exact, every component within 1e-5
//! (the fixture README's tolerance: PyTorch kernels differ by 2e-7, rounding adds 5e-7, while a
//! tanh GELU, a wrong eps, pooling over padding or a cut at 128 tokens all exceed it).

#[path = "common/minilm.rs"]
mod minilm;

use serde_json::Value;
use tessera::tasks::embed::{Embedder, Pooling, SentenceConfig};
use tessera::Device;

fn fixture() -> Value {
    let text = std::fs::read_to_string(minilm::FIXTURE).expect("read minilm_embeddings.json");
    serde_json::from_str(&text).unwrap()
}

fn load() -> Embedder {
    Embedder::load(&minilm::minilm_dir(), &Device::Cpu).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let fx = fixture();
    let emb = load();
    assert_eq!(emb.cfg.max_seq_length, 256);
    assert_eq!(emb.cfg.poolings, vec![Pooling::Mean]);
    assert!(emb.cfg.normalize);
    let sents = fx["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sents.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let ids = emb.encode_ids(&texts).unwrap();
    for (s, got) in sents.iter().zip(&ids) {
        let want: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, &want, "token ids of {:?}", s["text"]);
    }
    // One batch of all 20, as the fixture was made.
    let vecs = emb.embed(&texts, 32).unwrap();
    let mut worst = 0f32;
    for (s, v) in sents.iter().zip(&vecs) {
        let want: Vec<f32> = s["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        for (a, b) in v.iter().zip(&want) {
            worst = worst.max((a - b).abs());
        }
        let cos = tessera::tasks::embed::cosine(v, &want);
        assert!(cos >= 0.99999, "cosine {cos} for {:?}", s["text"]);
    }
    assert!(worst <= 1e-5, "max component difference {worst}");
    let cs = fx["cosine_similarity"].as_array().unwrap();
    for (i, row) in cs.iter().enumerate() {
        for (j, c) in row.as_array().unwrap().iter().enumerate() {
            let got = tessera::tasks::embed::cosine(&vecs[i], &vecs[j]);
            assert!(
                (got as f64 - c.as_f64().unwrap()).abs() < 1e-5,
                "cosine[{i}][{j}]"
            );
        }
    }
}

#[test]
fn padding_does_not_change_an_embedding() {
    let emb = load();
    let texts = [
        "short",
        "A much longer sentence that forces the short one to be padded in the same batch.",
        "Another one of middling length.",
    ];
    let batched = emb.embed(&texts, 8).unwrap();
    for (t, b) in texts.iter().zip(&batched) {
        let alone = emb.embed(&[t], 1).unwrap();
        let d = alone[0]
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{t:?}: batched vs alone differ by {d}");
    }
}

#[test]
fn long_input_is_cut_at_max_seq_length() {
    let emb = load();
    let text = "word ".repeat(400);
    let ids = emb.encode_ids(&[text.as_str()]).unwrap();
    assert_eq!(ids[0].len(), 256);
    assert_eq!(ids[0][0], 101);
    assert_eq!(ids[0][255], 102);
    assert_eq!(emb.embed(&[text.as_str(), ""], 2).unwrap().len(), 2);
}

#[test]
fn missing_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Embedder::load(tmp.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing config.json"), "{err}");
    let src = minilm::minilm_dir();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = Embedder::load(tmp.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("safetensors"), "{err}");
    std::fs::write(
        tmp.path().join("modules.json"),
        b"[{\"type\": \"x.Pooling\", \"path\": \"p\"}]",
    )
    .unwrap();
    let err = SentenceConfig::from_dir(tmp.path(), 512)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(
        tmp.path().join("config.json"),
        b"{\"model_type\": \"bert\", \"vocab_size\": 10}",
    )
    .unwrap();
    let err = Embedder::load(tmp.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing 'hidden_size'"), "{err}");
}
