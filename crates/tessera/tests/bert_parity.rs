//! Models saved by `tessera finetune` load in Hugging Face transformers as
//! `BertForSequenceClassification` / `BertForTokenClassification` with the same logits.
//! Fixture: `tests/fixtures/bert/` made by `scripts/bert_hf_parity.py` (fp32, eval mode).
//! Tolerance 1e-5 absolute: both sides are fp32 with different kernels (~1e-7 apart), while a
//! wrong head, pooler, mask or GELU moves these logits by far more.

use std::path::PathBuf;
use tessera::tasks::classify::{Classifier, HeadKind};
use tessera::{Device, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert")
}

fn flat(v: &serde_json::Value, out: &mut Vec<f32>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        x => out.push(x.as_f64().unwrap() as f32),
    }
}

#[test]
fn saved_classifiers_match_transformers() {
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("hf_logits.json")).unwrap())
            .unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(hf["ids"].clone()).unwrap();
    let mask: Vec<Vec<u32>> = serde_json::from_value(hf["mask"].clone()).unwrap();
    let ids = Tensor::new(ids, &Device::Cpu).unwrap();
    let mask = Tensor::new(mask, &Device::Cpu).unwrap();
    for (name, kind) in [("cls", HeadKind::Sequence), ("ner", HeadKind::Token)] {
        let m = Classifier::load(&fixture().join(name), &Device::Cpu).unwrap();
        assert_eq!(m.kind, kind);
        let got: Vec<f32> = m
            .logits(&ids, &mask, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut want = Vec::new();
        flat(&hf[name], &mut want);
        assert_eq!(got.len(), want.len(), "{name}");
        // Padded positions of a token head are not compared (transformers computes them too, but
        // they carry no meaning); sequence 0 has 2 padded positions at the end.
        let n_labels = m.labels.len();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if kind == HeadKind::Token && i < 8 * n_labels && i / n_labels >= 6 {
                continue;
            }
            assert!(
                (a - b).abs() < 1e-5,
                "{name}[{i}]: tessera {a} vs transformers {b}"
            );
        }
    }
}

/// A classifier trained from scratch (`--cjk-words` WordPiece tokenizer, MLM, task), loaded in
/// transformers the way a user would (`AutoTokenizer`, `AutoModelForSequenceClassification`):
/// the same token ids for Chinese, accented, mixed and over-long texts, and the same class
/// probabilities. Fixture: `scripts/bert_hf_parity.py scratch` + `logits`.
#[test]
fn from_scratch_classifier_matches_transformers_text_to_probabilities() {
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("hf_scratch.json")).unwrap())
            .unwrap();
    let m = Classifier::load(&fixture().join("scratch"), &Device::Cpu).unwrap();
    for (i, l) in m.labels.iter().enumerate() {
        assert_eq!(hf["id2label"][i.to_string()], l.as_str());
    }
    let rows = hf["texts"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let mut spread = (f32::MAX, f32::MIN);
    for r in rows {
        let text = r["text"].as_str().unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(r["ids"].clone()).unwrap();
        assert_eq!(m.encode(text).unwrap(), want_ids, "ids of {text:?}");
        let mut want = Vec::new();
        flat(&r["probs"], &mut want);
        let got = m.predict(&[text], 1).unwrap().remove(0);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-5,
                "{text:?}: tessera {a} vs transformers {b}"
            );
        }
        spread = (spread.0.min(got[0]), spread.1.max(got[0]));
    }
    // The texts get different probabilities, so agreement is not agreement on a constant.
    assert!(spread.1 - spread.0 > 0.1, "{spread:?}");
    // The over-long text was cut at the saved max length.
    assert_eq!(
        m.encode(rows[4]["text"].as_str().unwrap()).unwrap().len(),
        m.max_len
    );
}
