//! End-to-end tests of `tessera export` and of `--adapter` on `generate` and `chat`, on
//! SmolLM2-135M-Instruct (fetched into the model cache on first use) with a random LoRA adapter.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use tessera::models::gguf_loader::config_from_gguf;
use tessera::models::lora::{Adapter, BaseId, LoraConfig};
use tessera::util::rng::Rng;
use tessera::weights::Gguf;
use tessera::{Device, Tensor};

const MODEL: &str = "smollm2-135m-instruct";

fn tessera(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> (String, String) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "failed: {err}");
    (String::from_utf8(out.stdout.clone()).unwrap(), err)
}

/// Fails with exit status 1, a message containing every needle, and no panic.
fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// A random rank-4 adapter on every projection of SmolLM2, saved in `dir` for `base`
/// (`BaseId::of(MODEL)` with `layers` blocks).
fn adapter(dir: &Path, base_name: &str, layers: usize) {
    let path = tessera::hub::resolve(MODEL).expect("fetch smollm2-135m-instruct");
    let cfg = config_from_gguf(&Gguf::open(path).unwrap()).unwrap();
    let lora = LoraConfig::new(4, 8.0, &["all".to_string()], &cfg).unwrap();
    let mut rng = Rng::new(5);
    let mut tensors = HashMap::new();
    for s in lora.specs(&cfg).unwrap() {
        let n: usize = s.shape.iter().product();
        let std = if s.name.contains("lora_A") {
            1.0 / (s.shape[1] as f64).sqrt()
        } else {
            0.02
        };
        let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        tensors.insert(s.name, Tensor::from_vec(v, s.shape, &Device::Cpu).unwrap());
    }
    let mut base = BaseId::of(base_name, &cfg);
    base.num_layers = layers;
    Adapter {
        lora,
        base,
        tensors,
    }
    .save(dir, &cfg)
    .unwrap();
}

#[test]
fn export_merges_an_adapter_and_generate_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    adapter(&dir, MODEL, 30);
    let d = dir.to_str().unwrap();
    let out = tmp.path().join("merged.gguf");
    let o = out.to_str().unwrap();
    let (_, err) = ok(&tessera(
        &[
            "export",
            "--model",
            MODEL,
            "--adapter",
            d,
            "--out",
            o,
            "--type",
            "q8_0",
        ],
        b"",
    ));
    assert!(
        err.contains("210 projections merged") && err.contains("converted to q8_0"),
        "{err}"
    );
    let g = Gguf::open(&out).unwrap();
    assert_eq!(g.get_u64("general.file_type").unwrap(), Some(7));
    let types = g.type_counts();
    assert!(
        types.contains(&("Q8_0".to_string(), 211)) && types.contains(&("F32".to_string(), 61)),
        "{types:?}"
    );
    let gen = |model: &str, adapter: Option<&str>| -> serde_json::Value {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            "Name a color.",
            "--temperature",
            "0",
            "--max-tokens",
            "6",
            "--json",
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter", a]);
        }
        let (stdout, _) = ok(&tessera(&args, b""));
        serde_json::from_str(stdout.trim()).unwrap()
    };
    let merged = gen(o, None);
    let in_memory = gen(MODEL, Some(d));
    let base = gen(MODEL, None);
    for v in [&merged, &in_memory, &base] {
        assert!(!v["ids"].as_array().unwrap().is_empty(), "{v}");
    }
    // chat takes the adapter too (one answer to piped input).
    let (answer, _) = ok(&tessera(
        &[
            "chat",
            "--model",
            MODEL,
            "--adapter",
            d,
            "--temperature",
            "0",
            "--max-tokens",
            "4",
        ],
        b"Hi",
    ));
    assert!(!answer.trim().is_empty());
}

#[test]
fn an_adapter_of_another_model_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("other");
    adapter(&dir, "other-model-31-layers", 31);
    let d = dir.to_str().unwrap();
    let o = tmp.path().join("x.gguf");
    let needles = ["other-model-31-layers", MODEL, "31 layers", "30 layers"];
    fails_with(
        &tessera(
            &[
                "generate",
                "--model",
                MODEL,
                "--adapter",
                d,
                "--prompt",
                "x",
            ],
            b"",
        ),
        &needles,
    );
    fails_with(
        &tessera(&["chat", "--model", MODEL, "--adapter", d], b"Hi"),
        &needles,
    );
    fails_with(
        &tessera(
            &[
                "export",
                "--model",
                MODEL,
                "--adapter",
                d,
                "--out",
                o.to_str().unwrap(),
            ],
            b"",
        ),
        &needles,
    );
    assert!(!o.exists());
    // A directory without an adapter, and an unknown type.
    fails_with(
        &tessera(
            &[
                "generate",
                "--model",
                MODEL,
                "--adapter",
                tmp.path().to_str().unwrap(),
            ],
            b"",
        ),
        &["adapter_config.json"],
    );
    fails_with(
        &tessera(
            &[
                "export",
                "--model",
                MODEL,
                "--out",
                o.to_str().unwrap(),
                "--type",
                "q3_K",
            ],
            b"",
        ),
        &["unknown tensor type 'q3_K'"],
    );
}
