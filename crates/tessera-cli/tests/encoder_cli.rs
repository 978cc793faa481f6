//! End-to-end tests of `tessera embed`, `similar`, `finetune classify|ner`, `classify`, `tag`
//! and `bench embed` with all-MiniLM-L6-v2 from the model cache (fetched on first use).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn model_dir() -> PathBuf {
    tessera::hub::resolve("all-minilm-l6-v2").expect("fetch all-minilm-l6-v2")
}

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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn embed_jsonl_npy_and_similar() {
    let m = model_dir();
    let m = m.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.txt",
        b"The cat sleeps.\nStock markets fell sharply today.\nA kitten is napping.\n",
    );
    let out = ok(&tessera(&["embed", "--model", m, "--input", &input]));
    let rows: Vec<Vec<f64>> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].len(), 384);
    let jsonl = write(tmp.path(), "in.jsonl", b"{\"text\": \"The cat sleeps.\"}\n");
    let one = ok(&tessera(&["embed", "--model", m, "--input", &jsonl]));
    assert_eq!(one.lines().next().unwrap(), out.lines().next().unwrap());
    let npy = tmp.path().join("e.npy");
    ok(&tessera(&[
        "embed",
        "--model",
        m,
        "--input",
        &input,
        "--output",
        npy.to_str().unwrap(),
    ]));
    let (v, shape) = tessera::tasks::npy::read_npy(&std::fs::read(&npy).unwrap()).unwrap();
    assert_eq!(shape, (3, 384));
    assert!((v[384] as f64 - rows[1][0]).abs() < 1e-6);
    let s = ok(&tessera(&[
        "similar",
        "--model",
        m,
        "--corpus",
        &input,
        "--query",
        "a sleeping cat",
        "-k",
        "2",
    ]));
    let first: serde_json::Value = serde_json::from_str(s.lines().next().unwrap()).unwrap();
    assert_eq!(s.lines().count(), 2);
    assert_ne!(first["index"], 1, "{s}");
}

#[test]
fn embed_bad_input() {
    let m = model_dir();
    let m = m.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let empty_line = write(tmp.path(), "a.txt", b"one\n\nthree\n");
    fails_with(
        &tessera(&["embed", "--model", m, "--input", &empty_line]),
        ":2: empty line",
    );
    let bad = write(tmp.path(), "b.txt", b"ok\n\xff\xfe\n");
    fails_with(
        &tessera(&["embed", "--model", m, "--input", &bad]),
        "not valid UTF-8",
    );
    let js = write(
        tmp.path(),
        "c.jsonl",
        b"{\"text\": \"x\"}\n{\"txt\": \"y\"}\n",
    );
    fails_with(
        &tessera(&["embed", "--model", m, "--input", &js]),
        ":2: missing 'text'",
    );
    let good = write(tmp.path(), "d.txt", b"hello\n");
    let empty_dir = tmp.path().join("nomodel");
    std::fs::create_dir(&empty_dir).unwrap();
    fails_with(
        &tessera(&[
            "embed",
            "--model",
            empty_dir.to_str().unwrap(),
            "--input",
            &good,
        ]),
        "missing config.json",
    );
    fails_with(
        &tessera(&["embed", "--model", "no-such-model-xyz", "--input", &good]),
        "no-such-model-xyz",
    );
    fails_with(
        &tessera(&["classify", "--model", m, "--input", &good]),
        "not a fine-tuned classifier",
    );
}

#[test]
fn finetune_classify_and_ner_end_to_end() {
    let m = model_dir();
    let m = m.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut train = String::new();
    for i in 0..24 {
        let (t, l) = if i % 2 == 0 {
            ("I love it, wonderful", "great")
        } else {
            ("Stale and bland, not good", "other")
        };
        train.push_str(&serde_json::json!({"text": format!("{t} {i}"), "label": l}).to_string());
        train.push('\n');
    }
    let train = write(tmp.path(), "train.jsonl", train.as_bytes());
    let out = tmp.path().join("ff");
    let o = out.to_str().unwrap();
    ok(&tessera(&[
        "finetune",
        "classify",
        "--model",
        m,
        "--train",
        &train,
        "--out",
        o,
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--max-len",
        "16",
    ]));
    assert!(out.join("metrics.jsonl").exists() && out.join("loss.png").exists());
    let input = write(tmp.path(), "in.txt", b"wonderful\nstale\n");
    let pred = ok(&tessera(&["classify", "--model", o, "--input", &input]));
    let first: serde_json::Value = serde_json::from_str(pred.lines().next().unwrap()).unwrap();
    assert_eq!(pred.lines().count(), 2);
    assert!(first["scores"]["great"].as_f64().is_some() && first["label"].is_string());
    let bad_dev = write(
        tmp.path(),
        "dev.jsonl",
        b"{\"text\": \"x\", \"label\": \"meh\"}\n",
    );
    fails_with(
        &tessera(&[
            "finetune", "classify", "--model", m, "--train", &train, "--dev", &bad_dev, "--out", o,
        ]),
        "'meh' does not occur",
    );
    let bad_json = write(
        tmp.path(),
        "bad.jsonl",
        b"{\"text\": \"x\", \"label\": \"a\"}\n{oops\n",
    );
    fails_with(
        &tessera(&[
            "finetune", "classify", "--model", m, "--train", &bad_json, "--out", o,
        ]),
        ":2: malformed JSON",
    );
    let mut conll = String::new();
    for _ in 0..10 {
        conll.push_str("I\tO\nmet\tO\nBob\tB-person\nSmith\tI-person\n\n");
    }
    let conll = write(tmp.path(), "train.conll", conll.as_bytes());
    let ner = tmp.path().join("ner");
    let n = ner.to_str().unwrap();
    ok(&tessera(&[
        "finetune",
        "ner",
        "--model",
        m,
        "--train",
        &conll,
        "--out",
        n,
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--max-len",
        "16",
    ]));
    let tags = ok(&tessera(&["tag", "--model", n, "--input", &input]));
    let v: serde_json::Value = serde_json::from_str(tags.lines().next().unwrap()).unwrap();
    assert!(v["entities"].is_array());
    let bad_conll = write(tmp.path(), "bad.conll", b"I\tO\nBob\n");
    fails_with(
        &tessera(&[
            "finetune", "ner", "--model", m, "--train", &bad_conll, "--out", n,
        ]),
        ":2:",
    );
}
