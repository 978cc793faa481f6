//! `tessera word2vec` (train), `word2vec similar` and `word2vec analogy` on a small synthetic
//! corpus, and their errors on bad input: clear messages, exit status 1, no panic.

use std::path::Path;
use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
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

/// Sentences "the small X ran" (X an animal) and "a bright Y colour" (Y a colour), in a fixed
/// pseudo-random order.
fn corpus() -> String {
    let animals = ["cat", "dog", "cow"];
    let colours = ["red", "blue", "green"];
    let mut x: u64 = 12345;
    let mut text = String::new();
    for _ in 0..3000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        if r & 1 == 0 {
            text.push_str(&format!("The small {} ran.\n\n", animals[(r / 2) % 3]));
        } else {
            text.push_str(&format!("A bright {} colour!\n\n", colours[(r / 2) % 3]));
        }
    }
    text
}

const SMALL: [&str; 10] = [
    "--dim",
    "16",
    "--window",
    "2",
    "--epochs",
    "3",
    "--min-count",
    "1",
    "--sample",
    "0",
];

#[test]
fn train_similar_analogy() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "toy.txt", corpus().as_bytes());
    let out = dir.path().join("v.txt");
    let out_s = out.to_str().unwrap();
    let mut args = vec![
        "--threads",
        "1",
        "word2vec",
        "--data",
        &data,
        "--out",
        out_s,
        "--seed",
        "7",
    ];
    args.extend(SMALL);
    let res = tessera(&args);
    let summary = ok(&res);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("epoch 3/3: loss"), "{err}");
    assert!(err.contains("words/s"), "{err}");
    let j: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(j["vocab"], 12);
    assert_eq!(j["dim"], 16);
    assert_eq!(j["epochs"].as_array().unwrap().len(), 3);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("12 16\n"), "{}", &text[..40]);

    // Same seed, one thread: the same file. `train` is also accepted as an explicit action.
    let again = dir.path().join("v2.txt");
    let mut args2 = vec!["--threads", "1", "word2vec", "train", "--data", &data];
    args2.extend(["--out", again.to_str().unwrap(), "--seed", "7"]);
    args2.extend(SMALL);
    ok(&tessera(&args2));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);

    let sim = ok(&tessera(&[
        "word2vec",
        "similar",
        "Cat",
        "--vectors",
        out_s,
        "-k",
        "2",
        "--json",
    ]));
    let words: Vec<String> = sim
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["word"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(words.len(), 2);
    assert!(
        words.contains(&"dog".to_string()) && words.contains(&"cow".to_string()),
        "{words:?}"
    );
    let plain = ok(&tessera(&[
        "word2vec",
        "similar",
        "red",
        "--vectors",
        out_s,
    ]));
    assert_eq!(plain.lines().count(), 10);
    assert!(plain.starts_with("  1  "), "{plain}");
    let an = ok(&tessera(&[
        "word2vec",
        "analogy",
        "cat",
        "dog",
        "red",
        "--vectors",
        out_s,
        "-k",
        "3",
    ]));
    assert_eq!(an.lines().count(), 3);
}

#[test]
fn bad_training_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("v.txt");
    let out = out.to_str().unwrap();
    let good = write(d, "good.txt", corpus().as_bytes());
    let train = |data: &str, extra: &[&str]| {
        let mut a = vec!["--threads", "1", "word2vec", "--data", data, "--out", out];
        a.extend(extra);
        tessera(&a)
    };

    let missing = d.join("missing.txt");
    fails_with(&train(missing.to_str().unwrap(), &[]), "missing.txt");
    let empty = write(d, "empty.txt", b"");
    fails_with(&train(&empty, &[]), "empty.txt: no words in the file");
    let punct = write(d, "punct.txt", b"-- ... !!\n\n?");
    fails_with(&train(&punct, &[]), "no words in the file");
    let latin1 = write(d, "latin1.txt", b"caf\xe9 au lait\n");
    fails_with(&train(&latin1, &[]), "latin1.txt: not valid UTF-8");
    let rare = write(d, "rare.txt", b"every word here occurs once\n");
    fails_with(
        &train(&rare, &["--min-count", "5"]),
        "no word occurs at least 5 times",
    );
    let single = write(d, "single.txt", b"word\n\nword\n\nword\n");
    fails_with(
        &train(&single, &["--min-count", "1"]),
        "no (context, word) pairs",
    );
    fails_with(&train(&good, &["--dim", "0"]), "dim must be at least 1");
    fails_with(
        &train(&good, &["--window", "0"]),
        "window must be at least 1",
    );
    fails_with(
        &train(&good, &["--epochs", "0"]),
        "epochs must be at least 1",
    );
    fails_with(
        &train(&good, &["--lr", "0"]),
        "lr must be a positive number",
    );
    fails_with(
        &tessera(&["word2vec", "--data", &good, "--out", d.to_str().unwrap()]),
        "is a directory",
    );
    assert!(
        !Path::new(out).exists(),
        "no vectors are written on failure"
    );

    // No --data: a usage error from the argument parser (status 2), not a panic.
    let r = tessera(&["word2vec", "--out", out]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--data"));
}

#[test]
fn bad_queries_and_vectors_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v = write(d, "v.txt", b"3 2\nman 1 0\nwoman 0.9 0.1\nking 0 1\n");
    let sim = |word: &str, file: &str| tessera(&["word2vec", "similar", word, "--vectors", file]);
    let top = ok(&sim("man", &v));
    assert!(top.lines().next().unwrap().contains("woman"), "{top}");
    fails_with(
        &sim("dragon", &v),
        "'dragon' is not in the vocabulary (3 words)",
    );
    fails_with(
        &tessera(&["word2vec", "analogy", "man", "king", "elf", "--vectors", &v]),
        "'elf' is not in the vocabulary",
    );
    let missing = d.join("nope.txt");
    fails_with(&sim("man", missing.to_str().unwrap()), "nope.txt");
    for (name, bytes, needle) in [
        (
            "short.txt",
            &b"2 2\nman 1 0\nwoman 1\n"[..],
            "line 3: word 'woman' has 1 values",
        ),
        (
            "nan.txt",
            b"1 2\nman 1 x\n",
            "line 2: value 2 of word 'man' is not a finite number",
        ),
        ("header.txt", b"man 1 0\n", "line 1: header"),
        (
            "count.txt",
            b"5 2\nman 1 0\n",
            "announces 5 words, the file has 1",
        ),
        ("empty.txt", b"", "empty file"),
        (
            "binary.bin",
            b"1 2\nman \x00\x00\x80\xbf\x00\x00\x80\x3f\n",
            "not valid UTF-8",
        ),
    ] {
        let p = write(d, name, bytes);
        let r = sim("man", &p);
        fails_with(&r, needle);
        fails_with(&r, name);
    }
}
