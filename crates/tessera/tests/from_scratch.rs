//! Training an encoder from scratch (`finetune` with a BERT config file): a WordPiece tokenizer
//! is trained on the training texts, the model learns a toy Chinese sentiment task far above the
//! majority class, the saved directory reloads and classifies exactly as evaluated, the same seed
//! gives the same run; bad configs and empty data are clear errors.

use std::path::{Path, PathBuf};
use tessera::tasks::classify::Classifier;
use tessera::tasks::data::{Labelled, Tagged};
use tessera::tasks::finetune::{finetune, Event, FinetuneOptions, TaskData};
use tessera::tasks::scratch::read_scratch_config;
use tessera::tokenizer::Tokenizer;
use tessera::util::rng::Rng;
use tessera::Device;

fn tiny_config() -> serde_json::Value {
    serde_json::json!({"model_type": "bert", "vocab_size": 200, "hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "hidden_act": "gelu"})
}

fn write_config(dir: &Path, name: &str, v: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// Reviews of random filler characters with one sentiment word somewhere: learnable only by
/// attending to the right characters, at any position.
fn toy_reviews(n: usize, seed: u64) -> Vec<Labelled> {
    let filler: Vec<char> = "这家酒店房间服务早餐位置价格前台我们一次还是"
        .chars()
        .collect();
    let pos = ["很好", "喜欢", "满意", "推荐"];
    let neg = ["很差", "失望", "讨厌", "后悔"];
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let (words, label) = if i % 2 == 0 {
                (&pos, "positive")
            } else {
                (&neg, "negative")
            };
            let len = 4 + rng.below(8);
            let mut text: String = (0..len).map(|_| filler[rng.below(filler.len())]).collect();
            let at = rng.below(len + 1);
            let at = text.char_indices().nth(at).map_or(text.len(), |(b, _)| b);
            text.insert_str(at, words[rng.below(4)]);
            Labelled {
                text,
                label: label.into(),
            }
        })
        .collect()
}

fn opts() -> FinetuneOptions {
    FinetuneOptions {
        epochs: 12,
        batch_size: 8,
        lr: 3e-3,
        dropout: Some(0.0),
        patience: 0,
        mlm_epochs: 0,
        ..FinetuneOptions::scratch()
    }
}

#[test]
fn learns_from_scratch_saves_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "bert.json", &tiny_config());
    let data = TaskData::Classify {
        train: toy_reviews(96, 1),
        dev: toy_reviews(32, 2),
    };
    let out = tmp.path().join("run");
    let mut vocab = 0;
    let mut on_event = |e: Event<'_>| {
        if let Event::Scratch {
            vocab_size,
            tokenizer_trained,
            ..
        } = e
        {
            assert!(tokenizer_trained);
            vocab = vocab_size;
        }
    };
    let reports = finetune(&cfg, &data, &opts(), &out, None, &mut on_event).unwrap();
    let curve: Vec<(f64, f64)> = reports.iter().map(|r| (r.train_loss, r.score)).collect();
    // Loss falls, and the model beats the majority class (0.5) by far.
    assert!(
        reports.last().unwrap().train_loss < 0.5 * reports[0].train_loss,
        "{curve:?}"
    );
    let best = reports.iter().rfind(|r| r.best).unwrap();
    assert!(best.score >= 0.9, "{curve:?}");

    // The directory is a fine-tuned one: config with the tokenizer's vocabulary, weights,
    // tokenizer, label map.
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["architectures"][0], "BertForSequenceClassification");
    assert_eq!(saved["model_type"], "bert");
    assert_eq!(saved["vocab_size"], vocab);
    assert_eq!(saved["pad_token_id"], 0);
    assert_eq!(saved["hidden_size"], 32);
    // --max-len 128 is cut to the 64 positions of the config.
    assert_eq!(saved["tessera_max_length"], 64);
    // transformers must use tokenizer.json as it is (not a BertTokenizer with its own defaults).
    let tok_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(tok_cfg["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(tok_cfg["model_max_length"], 64);

    // The trained tokenizer splits CJK per character, wraps in [CLS] … [SEP], and reloads.
    let tok = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), vocab);
    let enc = tok.inner().encode("房间很好", true).unwrap();
    assert_eq!(enc.get_tokens(), ["[CLS]", "房", "间", "很", "好", "[SEP]"]);
    let text = tok.inner().decode(enc.get_ids(), true).unwrap();
    assert_eq!(text.replace(' ', ""), "房间很好");

    // Reloaded, it classifies the dev set exactly as the best epoch was scored.
    let m = Classifier::load(&out, &Device::Cpu).unwrap();
    let TaskData::Classify { dev, .. } = &data else {
        unreachable!()
    };
    let texts: Vec<&str> = dev.iter().map(|e| e.text.as_str()).collect();
    let probs = m.predict(&texts, 32).unwrap();
    let correct = probs
        .iter()
        .zip(dev)
        .filter(|(p, e)| {
            let k = if p[1] > p[0] { 1 } else { 0 };
            m.labels[k] == e.label
        })
        .count();
    assert_eq!(correct as f64 / dev.len() as f64, best.score);
    let again = Classifier::load(&out, &Device::Cpu)
        .unwrap()
        .predict(&texts, 5)
        .unwrap();
    for (a, b) in probs.iter().zip(&again) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{d}");
    }
}

#[test]
fn same_seed_same_run_and_given_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "bert.json", &tiny_config());
    let data = TaskData::Classify {
        train: toy_reviews(32, 3),
        dev: toy_reviews(8, 4),
    };
    let o = FinetuneOptions {
        epochs: 2,
        ..opts()
    };
    let run = |out: &Path, o: &FinetuneOptions| {
        finetune(&cfg, &data, o, out, None, &mut |_| {}).unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = run(&tmp.path().join("a"), &o);
    let b = run(&tmp.path().join("b"), &o);
    assert!(a == b, "same seed, different weights");
    // Reusing the first run's tokenizer gives the same run again.
    let given = FinetuneOptions {
        tokenizer: Some(tmp.path().join("a/tokenizer.json")),
        ..o.clone()
    };
    let c = run(&tmp.path().join("c"), &given);
    assert!(a == c, "the given tokenizer changed the run");
    let other = FinetuneOptions { seed: 7, ..o };
    assert!(a != run(&tmp.path().join("d"), &other));
}

#[test]
fn mlm_pretraining_loss_falls_then_task_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "bert.json", &tiny_config());
    let data = TaskData::Classify {
        train: toy_reviews(96, 5),
        dev: toy_reviews(32, 6),
    };
    let o = FinetuneOptions {
        mlm_epochs: 6,
        mlm_lr: 3e-3,
        ..opts()
    };
    let mut mlm = Vec::new();
    let mut on_event = |e: Event<'_>| {
        if let Event::PretrainEpoch { loss, .. } = e {
            mlm.push(loss);
        }
    };
    let out = tmp.path().join("run");
    let reports = finetune(&cfg, &data, &o, &out, None, &mut on_event).unwrap();
    assert_eq!(mlm.len(), 6);
    // Filler drawn at random bounds what can be predicted; the loss still falls clearly.
    assert!(mlm[5] < mlm[0] - 0.15, "{mlm:?}");
    let best = reports.iter().map(|r| r.score).fold(0.0, f64::max);
    let curve: Vec<(f64, f64)> = reports.iter().map(|r| (r.train_loss, r.score)).collect();
    assert!(best >= 0.9, "{curve:?}");
    // The MLM head is not part of the saved classifier.
    let m = Classifier::load(&out, &Device::Cpu).unwrap();
    assert_eq!(m.labels, ["negative", "positive"]);
}

/// `mlm_data`: more unlabelled text for the MLM pretraining; from scratch the tokenizer learns
/// its characters too, and the pretraining runs over both sets. Without MLM epochs it is an error.
#[test]
fn mlm_data_joins_pretraining_and_the_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "bert.json", &tiny_config());
    let data = TaskData::Classify {
        train: toy_reviews(64, 9),
        dev: toy_reviews(16, 10),
    };
    let extra = tmp.path().join("news.txt");
    // characters that never occur in the reviews
    std::fs::write(&extra, "龙虾和螃蟹\n螃蟹和龙虾都很贵\n".repeat(24)).unwrap();
    let o = FinetuneOptions {
        epochs: 1,
        mlm_epochs: 2,
        mlm_data: Some(extra.clone()),
        ..opts()
    };
    let mut mlm_total = 0;
    let mut on_event = |e: Event<'_>| {
        if let Event::Pretrain { total, .. } = e {
            mlm_total = total;
        }
    };
    let out = tmp.path().join("run");
    finetune(&cfg, &data, &o, &out, None, &mut on_event).unwrap();
    // (64 training + 48 extra texts) / batch 8 = 14 steps per epoch
    assert_eq!(mlm_total, 2 * 14);
    let tok = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for ch in ["龙", "虾", "螃", "蟹"] {
        assert!(
            tok.inner().token_to_id(ch).is_some(),
            "{ch} not in the vocabulary"
        );
    }
    let no_mlm = FinetuneOptions {
        mlm_epochs: 0,
        mlm_data: Some(extra),
        ..opts()
    };
    let err = finetune(
        &cfg,
        &data,
        &no_mlm,
        &tmp.path().join("x"),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no MLM pretraining"), "{err}");
}

#[test]
fn ner_from_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "bert.json", &tiny_config());
    let cities = ["Paris", "London", "Berlin", "Madrid"];
    let sents: Vec<Tagged> = (0..48)
        .map(|i| {
            let words = ["I", "flew", "to", cities[i % 4], "today"];
            let tags = ["O", "O", "O", "B-loc", "O"];
            Tagged {
                words: words.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    let data = TaskData::Ner {
        train: sents[..40].to_vec(),
        dev: sents[40..].to_vec(),
    };
    let o = FinetuneOptions {
        cased: true,
        ..opts()
    };
    let out = tmp.path().join("ner");
    let reports = finetune(&cfg, &data, &o, &out, None, &mut |_| {}).unwrap();
    assert_eq!(reports.iter().map(|r| r.score).fold(0.0, f64::max), 1.0);
    let m = Classifier::load(&out, &Device::Cpu).unwrap();
    let e = m.tag_texts(&["I flew to Paris today"], 4).unwrap();
    assert_eq!(e[0].len(), 1, "{e:?}");
    assert_eq!((e[0][0].text.as_str(), e[0][0].start), ("Paris", 10));
}

#[test]
fn bundled_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (name, width) in [("bert-tiny.json", 128), ("bert-mini.json", 256)] {
        let (cfg, vocab) = read_scratch_config(&root.join(name)).unwrap();
        assert_eq!(cfg.hidden_size, width);
        assert_eq!(vocab, Some(8000));
    }
}

#[test]
fn bad_configs_and_data_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = TaskData::Classify {
        train: toy_reviews(8, 1),
        dev: toy_reviews(4, 2),
    };
    let fails = |cfg: &Path, data: &TaskData, o: &FinetuneOptions| {
        finetune(cfg, data, o, &tmp.path().join("x"), None, &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"num_attention_heads": 5}),
            "hidden_size 32 is not divisible by num_attention_heads 5",
        ),
        (
            serde_json::json!({"hidden_act": "swoosh"}),
            "unknown activation 'swoosh'",
        ),
        (serde_json::json!({"model_type": "gpt2"}), "not an encoder"),
        (serde_json::json!({"model_type": null}), "no \"model_type\""),
        (
            serde_json::json!({"hidden_size": "wide"}),
            "'hidden_size' must be a non-negative integer",
        ),
    ];
    for (i, (patch, needle)) in cases.into_iter().enumerate() {
        let mut v = tiny_config();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        let p = write_config(tmp.path(), &format!("c{i}.json"), &v);
        let e = fails(&p, &data, &opts());
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(e.contains(&format!("c{i}.json")), "names the file: {e}");
    }
    // A decoder config from configs/ is refused as such.
    let gpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.json");
    let e = fails(&gpt, &data, &opts());
    assert!(e.contains("model_type 'gpt2' is not an encoder"), "{e}");
    // Not JSON.
    let p = tmp.path().join("bad.json");
    std::fs::write(&p, "{ nope").unwrap();
    assert!(fails(&p, &data, &opts()).contains("not valid JSON"));

    let cfg = write_config(tmp.path(), "ok.json", &tiny_config());
    // Empty training set, or only empty texts.
    let empty = TaskData::Classify {
        train: vec![],
        dev: toy_reviews(4, 2),
    };
    assert!(fails(&cfg, &empty, &opts()).contains("training set is empty"));
    let blank = TaskData::Classify {
        train: (0..4)
            .map(|i| Labelled {
                text: " ".into(),
                label: ["a", "b"][i % 2].into(),
            })
            .collect(),
        dev: vec![Labelled {
            text: "x".into(),
            label: "a".into(),
        }],
    };
    assert!(fails(&cfg, &blank, &opts()).contains("empty"));
    // A tokenizer without BERT's special tokens.
    let bpe = Tokenizer::train_bpe(&["some text to learn from"], 300).unwrap();
    let bpe_path = tmp.path().join("bpe.json");
    bpe.save(&bpe_path).unwrap();
    let o = FinetuneOptions {
        tokenizer: Some(bpe_path),
        ..opts()
    };
    assert!(fails(&cfg, &data, &o).contains("no [UNK] token"));
    // A vocabulary too small to train.
    let o = FinetuneOptions {
        vocab_size: Some(2),
        ..opts()
    };
    assert!(fails(&cfg, &data, &o).contains("too small"));
}
