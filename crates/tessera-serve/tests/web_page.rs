//! The web chat page in a real browser: Debian's `chromium` driven headless by `playwright-core`
//! (npm), through `tests/web/page_test.mjs` (streamed answer, tokens/s, multi-turn, stop).
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in `tests/web` (scripts/test.sh does
//! both).

use std::process::Command;
use tessera_serve::ServeOptions;

mod common;

#[test]
fn web_page_in_headless_chromium() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `npm ci` in {dir} (scripts/test.sh does)"
    );
    let opts = ServeOptions {
        port: 0,
        parallel: 2,
        ctx: 1024,
        ..Default::default()
    };
    let addr = common::start(opts);
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
