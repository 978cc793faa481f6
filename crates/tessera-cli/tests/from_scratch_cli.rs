//! `tessera finetune classify --model CONFIG.json` end to end: trains an encoder from scratch
//! with its own tokenizer on a toy Chinese task, `tessera classify` uses the saved directory;
//! bad configs and an empty training file are clear errors. Needs no pretrained model.

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("run tessera")
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// 64 reviews: a positive or negative word inside neutral filler.
fn toy_jsonl() -> String {
    let filler = ["这家酒店", "房间", "早餐", "前台服务", "位置"];
    let pos = ["很好", "喜欢", "满意", "推荐"];
    let neg = ["很差", "失望", "讨厌", "后悔"];
    let mut s = String::new();
    for i in 0..64 {
        let (w, label) = if i % 2 == 0 {
            (pos[i / 2 % 4], "positive")
        } else {
            (neg[i / 2 % 4], "negative")
        };
        let f = filler[i % 5];
        let text = if i % 3 == 0 {
            format!("{w}，{f}")
        } else {
            format!("{f}{w}。")
        };
        s.push_str(&serde_json::json!({"text": text, "label": label}).to_string());
        s.push('\n');
    }
    s
}

const TINY: &str = common::TINY_BERT;

#[test]
fn trains_from_scratch_and_classifies() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "bert.json", TINY);
    let train = write(tmp.path(), "train.jsonl", &toy_jsonl());
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let stdout = ok(&tessera(&[
        "finetune",
        "classify",
        "--model",
        &cfg,
        "--train",
        &train,
        "--out",
        o,
        "--dev-split",
        "0.25",
        "--epochs",
        "25",
        "--patience",
        "0",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--dropout",
        "0",
        "--max-len",
        "32",
        "--vocab-size",
        "300",
        "--mlm-epochs",
        "1",
    ]));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        summary["score"].as_f64().unwrap() >= 0.9,
        "far above the majority class: {summary}"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "loss.png",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let input = write(tmp.path(), "in.txt", "房间很好\n前台服务很差\n");
    let lines = ok(&tessera(&["classify", "--model", o, "--input", &input]));
    let labels: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["label"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(labels, ["positive", "negative"]);
    // The same run again on the given tokenizer gives the same model.
    let out2 = tmp.path().join("run2");
    let tok = out.join("tokenizer.json");
    ok(&tessera(&[
        "finetune",
        "classify",
        "--model",
        &cfg,
        "--train",
        &train,
        "--out",
        out2.to_str().unwrap(),
        "--dev-split",
        "0.25",
        "--epochs",
        "25",
        "--patience",
        "0",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--dropout",
        "0",
        "--max-len",
        "32",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--mlm-epochs",
        "1",
    ]));
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap()
            == std::fs::read(out2.join("model.safetensors")).unwrap()
    );
}

#[test]
fn bad_configs_and_empty_data() {
    let tmp = tempfile::tempdir().unwrap();
    let train = write(tmp.path(), "train.jsonl", &toy_jsonl());
    let out = tmp.path().join("x");
    let o = out.to_str().unwrap();
    let run = |cfg: &str, train: &str| {
        tessera(&[
            "finetune", "classify", "--model", cfg, "--train", train, "--out", o, "--epochs", "1",
        ])
    };
    let heads = write(
        tmp.path(),
        "heads.json",
        &TINY.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"),
    );
    fails_with(
        &run(&heads, &train),
        "not divisible by num_attention_heads 3",
    );
    let act = write(
        tmp.path(),
        "act.json",
        &TINY.replace(
            "\"model_type\": \"bert\",",
            "\"model_type\": \"bert\", \"hidden_act\": \"mish\",",
        ),
    );
    fails_with(&run(&act, &train), "unknown activation 'mish'");
    let gpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.json");
    fails_with(
        &run(gpt.to_str().unwrap(), &train),
        "model_type 'gpt2' is not an encoder",
    );
    let cfg = write(tmp.path(), "bert.json", TINY);
    let empty = write(tmp.path(), "empty.jsonl", "");
    fails_with(&run(&cfg, &empty), "no examples");
    // A vocabulary too small for the special tokens.
    let args = [
        "finetune",
        "classify",
        "--model",
        &cfg,
        "--train",
        &train,
        "--out",
        o,
        "--vocab-size",
        "3",
    ];
    fails_with(&tessera(&args), "too small");
}
