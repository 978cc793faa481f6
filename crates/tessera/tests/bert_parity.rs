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
