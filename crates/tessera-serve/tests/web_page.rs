//! The web chat page in a real browser: Debian's `chromium` driven headless by `playwright-core`
//! (npm), through `tests/web/page_test.mjs` (streamed answer, tokens/s, multi-turn, stop).
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in `tests/web` (scripts/test.sh does
//! both).

use std::process::Command;
use std::time::Duration;
use tessera_serve::{ServeOptions, Server};

#[test]
fn web_page_in_headless_chromium() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `npm ci` in {dir} (scripts/test.sh does)"
    );
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
                ctx: 1024,
                ..Default::default()
            };
            let bound = Server::load(opts).unwrap().bind().await.unwrap();
            tx.send(bound.addr()).unwrap();
            bound.serve(std::future::pending()).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(600)).unwrap();
    let out = Command::new("node")
        .current_dir(dir)
        .args(["page_test.mjs", &format!("http://{addr}/")])
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("page: ok"), "{stdout}");
    eprintln!("{stdout}");
}
