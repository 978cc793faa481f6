//! The official `openai` Python package (pip) against `tessera serve`: chat whole and streamed,
//! completions, models, an error, embeddings (tests/openai_client.py). Needs `python3` with
//! `openai` installed (scripts/test.sh installs it; `TESSERA_PYTHON` picks another interpreter).

use std::process::Command;
use std::time::Duration;
use tessera_serve::{ServeOptions, Server};

#[test]
fn official_openai_client() {
    let python = std::env::var("TESSERA_PYTHON").unwrap_or_else(|_| "python3".into());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let opts = ServeOptions {
                port: 0,
                parallel: 2,
                ctx: 512,
                api_key: Some("test-key".into()),
                embedding_model: Some("all-minilm-l6-v2".into()),
                ..Default::default()
            };
            let bound = Server::load(opts).unwrap().bind().await.unwrap();
            tx.send(bound.addr()).unwrap();
            bound.serve(std::future::pending()).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(600)).unwrap();
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
