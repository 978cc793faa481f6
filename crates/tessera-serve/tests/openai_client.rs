//! The official `openai` Python package (pip) against `tessera serve`: chat whole and streamed,
//! completions, models, an error, embeddings (tests/openai_client.py). Needs `python3` with
//! `openai` installed (scripts/test.sh installs it; `TESSERA_PYTHON` picks another interpreter).

use std::process::Command;
use tessera_serve::ServeOptions;

mod common;

#[test]
fn official_openai_client() {
    let python = std::env::var("TESSERA_PYTHON").unwrap_or_else(|_| "python3".into());
    let opts = ServeOptions {
        port: 0,
        parallel: 2,
        ctx: 512,
        api_key: Some("test-key".into()),
        embedding_model: Some("all-minilm-l6-v2".into()),
        ..Default::default()
    };
    let addr = common::start(opts);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new(&python)
        .args([script, &format!("http://{addr}"), "test-key"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} {script} failed (is the `openai` package installed? pip install openai):\n{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("openai client: ok"));
}
