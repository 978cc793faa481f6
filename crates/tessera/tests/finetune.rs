//! Fine-tuning: a tiny BERT (random weights, MiniLM's WordPiece vocabulary) learns a toy text
//! classification and a toy NER task; the saved directory loads back with identical outputs;
//! bad label sets are clear errors.

#[path = "common/minilm.rs"]
mod minilm;

use std::path::Path;
use tessera::models::encoder::bert_param_specs;
use tessera::models::params::Init;
use tessera::models::TransformerConfig;
use tessera::tasks::classify::Classifier;
use tessera::tasks::data::{Labelled, Tagged};
use tessera::tasks::finetune::{finetune, FinetuneOptions, TaskData};
use tessera::tasks::Truncation;
use tessera::util::rng::Rng;
use tessera::weights::safetensors::safetensors_bytes;
use tessera::{Device, Tensor};

/// A 1-layer, 16-wide BERT with random weights and MiniLM's tokenizer, written to `dir`.
fn tiny_bert(dir: &Path) {
    let cfg = serde_json::json!({"model_type": "bert", "vocab_size": 30522, "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 64, "hidden_act": "gelu"});
    let bc = TransformerConfig::from_hf_json(&cfg).unwrap();
    let mut rng = Rng::new(7);
    let tensors: Vec<(String, Tensor)> = bert_param_specs(&bc, "", true)
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let v: Vec<f32> = match s.init {
                Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Uniform(b) => (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * b) as f32)
                    .collect(),
            };
            (
                s.name,
                Tensor::from_vec(v, s.shape.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(&tensors).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        minilm::minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
}

fn opts() -> FinetuneOptions {
    FinetuneOptions {
        epochs: 8,
        batch_size: 8,
        lr: 3e-3,
        dropout: Some(0.0),
        patience: 0,
        ..Default::default()
    }
}

fn toy_texts(n: usize) -> Vec<Labelled> {
    let pos = ["good", "great", "lovely", "excellent"];
    let neg = ["bad", "awful", "terrible", "horrible"];
    (0..n)
        .map(|i| {
            let (w, label) = if i % 2 == 0 {
                (pos[i / 2 % 4], "yes")
            } else {
                (neg[i / 2 % 4], "no")
            };
            Labelled {
                text: format!("the food was {w} today"),
                label: label.into(),
            }
        })
        .collect()
}

#[test]
fn classifier_learns_saves_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_bert(&base);
    let out = tmp.path().join("run");
    let data = TaskData::Classify {
        train: toy_texts(48),
        dev: toy_texts(8),
    };
    let o = FinetuneOptions {
        epochs: 30,
        lr: 1e-2,
        ..opts()
    };
    let reports = finetune(&base, &data, &o, &out, None, &mut |_| {}).unwrap();
    let best = reports.iter().map(|r| r.score).fold(0.0, f64::max);
    assert_eq!(
        best,
        1.0,
        "{:?}",
        reports
            .iter()
            .map(|r| (r.train_loss, r.score))
            .collect::<Vec<_>>()
    );
    assert!(reports.last().unwrap().train_loss < reports[0].train_loss);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // metrics.jsonl: one line per step, then per epoch an evaluation line agreeing with the
    // report (its step, and whether it was the best so far).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evals: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("eval").is_some()).collect();
    assert_eq!(evals.len(), reports.len());
    let mut best_so_far = f64::NEG_INFINITY;
    for (e, r) in evals.iter().zip(&reports) {
        assert_eq!(e["step"], r.step);
        assert_eq!(e["eval"]["step"], r.step);
        assert_eq!(e["eval"]["best"], r.best);
        assert_eq!(r.best, r.score > best_so_far);
        best_so_far = best_so_far.max(r.score);
    }
    let steps = lines.iter().filter(|l| l.get("loss").is_some()).count();
    assert_eq!(steps, reports.last().unwrap().step);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(cfg["id2label"]["0"], "no");
    let m = Classifier::load(&out, &Device::Cpu).unwrap();
    let p = m
        .predict(&["the food was great today", "the food was awful today"], 2)
        .unwrap();
    assert!(p[0][1] > 0.5 && p[1][0] > 0.5, "{p:?}");
    // Reloading gives bit-identical probabilities, batched or alone (padding does not leak).
    let m2 = Classifier::load(&out, &Device::Cpu).unwrap();
    let alone = m2.predict(&["the food was great today"], 1).unwrap();
    let batched = m2
        .predict(
            &[
                "the food was great today",
                "a much longer text that pads the other one a lot",
            ],
            2,
        )
        .unwrap();
    assert_eq!(alone[0], p[0]);
    let d = alone[0]
        .iter()
        .zip(&batched[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-6, "{d}");
    assert!(m.tag_texts(&["x"], 1).is_err());
}

#[test]
fn ner_learns_and_tags_spans() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_bert(&base);
    let cities = ["paris", "london", "berlin", "madrid"];
    let sents: Vec<Tagged> = (0..40)
        .map(|i| {
            let c = cities[i % 4];
            let words = ["i", "flew", "to", c, "new", "york", "today"];
            let tags = ["O", "O", "O", "B-loc", "B-loc", "I-loc", "O"];
            Tagged {
                words: words.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    let data = TaskData::Ner {
        train: sents[..32].to_vec(),
        dev: sents[32..].to_vec(),
    };
    let out = tmp.path().join("ner");
    let reports = finetune(&base, &data, &opts(), &out, None, &mut |_| {}).unwrap();
    let best = reports.iter().map(|r| r.score).fold(0.0, f64::max);
    assert_eq!(best, 1.0);
    assert!(reports[0].dev["per_type"]["loc"].is_object());
    let m = Classifier::load(&out, &Device::Cpu).unwrap();
    let e = m.tag_texts(&["i  flew to paris today"], 4).unwrap();
    assert_eq!(e[0].len(), 1, "{e:?}");
    assert_eq!(
        (
            e[0][0].kind.as_str(),
            e[0][0].text.as_str(),
            e[0][0].start,
            e[0][0].end
        ),
        ("loc", "paris", 11, 16)
    );
    assert!(m.predict(&["x"], 1).is_err());
}

#[test]
fn bad_label_sets_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_bert(&base);
    let mut dev = toy_texts(4);
    dev[0].label = "maybe".into();
    let data = TaskData::Classify {
        train: toy_texts(8),
        dev,
    };
    let err = finetune(
        &base,
        &data,
        &opts(),
        &tmp.path().join("x"),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("'maybe' does not occur in the training data"),
        "{err}"
    );
    let one: Vec<Labelled> = toy_texts(8)
        .into_iter()
        .filter(|e| e.label == "yes")
        .collect();
    let data = TaskData::Classify {
        train: one.clone(),
        dev: one,
    };
    let err = finetune(
        &base,
        &data,
        &opts(),
        &tmp.path().join("y"),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least 2 labels"), "{err}");
    let err = Classifier::load(&base, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a fine-tuned classifier"), "{err}");
}

/// The label word comes last, after a long preamble: with `max_len` 12 only tail-keeping
/// truncation sees it. The rule is saved with the model and applied when it is loaded.
#[test]
fn truncation_chooses_which_end_of_a_long_text_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_bert(&base);
    let long = |v: Vec<Labelled>| -> Vec<Labelled> {
        v.into_iter()
            .map(|e| Labelled {
                text: format!("{} {}", "we went to the place again and".repeat(4), e.text),
                label: e.label,
            })
            .collect()
    };
    let data = TaskData::Classify {
        train: long(toy_texts(48)),
        dev: long(toy_texts(8)),
    };
    let run = |t: Truncation, name: &str| {
        let o = FinetuneOptions {
            epochs: 30,
            lr: 1e-2,
            max_len: 12,
            truncation: t,
            ..opts()
        };
        let out = tmp.path().join(name);
        let r = finetune(&base, &data, &o, &out, None, &mut |_| {}).unwrap();
        (r.iter().map(|r| r.score).fold(0.0, f64::max), out)
    };
    let (head, _) = run(Truncation::Head, "head");
    assert!(
        head <= 0.625,
        "the head holds no label word, yet dev accuracy {head}"
    );
    for (t, name) in [
        (Truncation::Tail, "tail"),
        (Truncation::HeadTail, "head-tail"),
    ] {
        let (score, out) = run(t, name);
        assert_eq!(score, 1.0, "{name}");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["tessera_truncation"], name);
        let m = Classifier::load(&out, &Device::Cpu).unwrap();
        assert_eq!(m.truncation(), t);
        let text = &data_text(&data);
        let ids = m.encode(text).unwrap();
        assert_eq!(ids.len(), 12);
        let full = m.tokenizer.encode(text.as_str(), true).unwrap();
        assert_eq!(ids[..1], full.get_ids()[..1], "[CLS] first");
        // the tokenizer's own (head) truncation keeps the start; ours ends like the text
        let untrunc = {
            let mut t = m.tokenizer.clone();
            t.with_truncation(None).unwrap();
            t.encode(text.as_str(), true).unwrap().get_ids().to_vec()
        };
        assert_eq!(ids[ids.len() - 4..], untrunc[untrunc.len() - 4..]);
        let p = m.predict(&[text.as_str()], 1).unwrap();
        assert!(p[0][1] > 0.5, "{name}: {p:?}");
    }
    // A token head labels the words it sees: only head truncation.
    let m = Classifier::load(&tmp.path().join("head"), &Device::Cpu).unwrap();
    assert_eq!(m.truncation(), Truncation::Head);
    let sents = vec![Tagged {
        words: vec!["to".into(), "paris".into()],
        tags: vec!["O".into(), "B-loc".into()],
    }];
    let ner = TaskData::Ner {
        train: sents.clone(),
        dev: sents,
    };
    let o = FinetuneOptions {
        truncation: Truncation::Tail,
        ..opts()
    };
    let err = finetune(&base, &ner, &o, &tmp.path().join("ner"), None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("text classification only"), "{err}");
}

/// The first dev text (label "yes": "... the food was good today").
fn data_text(d: &TaskData) -> String {
    match d {
        TaskData::Classify { dev, .. } => dev[0].text.clone(),
        TaskData::Ner { .. } => unreachable!(),
    }
}
