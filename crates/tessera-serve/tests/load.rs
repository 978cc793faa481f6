//! Load and faults: 64 concurrent streaming clients for `TESSERA_LOAD_SECS` seconds (default 60)
//! with no failed request apart from deliberate 429s, every stream ending with `[DONE]` and every
//! greedy answer equal to the same request served alone (no response mixes two requests); then
//! 1,000 requests within about a second, clients killed mid-stream, and a last check that the
//! server still answers and its memory stayed bounded (resident size before and after).

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_serve::ServeOptions;

mod common;

const PROMPTS: [&str; 8] = [
    "Write a story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle.",
    "Write a letter to a friend.",
    "List facts about the planets.",
    "Tell me about bread.",
    "Write a poem about autumn.",
    "Describe a busy market.",
];

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn body(i: usize, stream: bool) -> Value {
    json!({"temperature": 0, "max_tokens": 16, "stream": stream,
           "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}]})
}

/// A streamed answer: (status, text, ended with [DONE]).
async fn streamed(c: &reqwest::Client, addr: SocketAddr, b: &Value) -> (u16, String, bool) {
    let r = match c
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(b)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return (0, e.to_string(), false),
    };
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    if status != 200 {
        return (status, text, false);
    }
    let mut out = String::new();
    let mut done = false;
    for block in text.split("\n\n") {
        let Some(data) = block.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(t);
        }
    }
    (status, out, done)
}

#[test]
fn sixty_four_clients_faults_and_bounded_memory() {
    let secs: u64 = std::env::var("TESSERA_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let opts = ServeOptions {
        port: 0,
        parallel: 8,
        ctx: 256,
        queue: 48,
        ..Default::default()
    };
    let addr = common::start(opts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .pool_max_idle_per_host(128)
            .build()
            .unwrap();
        // Each prompt served alone first.
        let mut solo = Vec::new();
        for i in 0..PROMPTS.len() {
            let (s, text, done) = streamed(&c, addr, &body(i, true)).await;
            assert!(s == 200 && done, "solo {i}: {s} {text}");
            solo.push(text);
        }
        let solo = Arc::new(solo);
        let rss_before = rss_kib();

        // 64 streaming clients for `secs` seconds.
        let ok = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let end = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..64)
            .map(|k| {
                let (c, solo, ok, busy) = (c.clone(), solo.clone(), ok.clone(), busy.clone());
                tokio::spawn(async move {
                    let mut i = k;
                    let mut failures = Vec::new();
                    while Instant::now() < end {
                        let (s, text, done) = streamed(&c, addr, &body(i, true)).await;
                        match s {
                            200 if done && text == solo[i % PROMPTS.len()] => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            200 => failures.push(format!(
                                "client {k}: prompt {} gave {text:?} (alone: {:?}), done {done}",
                                i % PROMPTS.len(),
                                solo[i % PROMPTS.len()]
                            )),
                            429 => {
                                busy.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            other => failures.push(format!("client {k}: status {other}: {text}")),
                        }
                        i += 7;
                    }
                    failures
                })
            })
            .collect();
        let mut failures = Vec::new();
        for t in tasks {
            failures.extend(t.await.unwrap());
        }
        let (ok, busy) = (ok.load(Ordering::Relaxed), busy.load(Ordering::Relaxed));
        eprintln!("64 clients, {secs} s: {ok} answers, {busy} deliberate 429s");
        assert!(
            failures.is_empty(),
            "{} failures: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        assert!(ok >= 64, "only {ok} answers");

        // 1,000 requests at once (non-streaming): each is answered 200 or 429, nothing else.
        let t = Instant::now();
        let burst: Vec<_> = (0..1000)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    let r = c
                        .post(format!("http://{addr}/v1/chat/completions"))
                        .json(&json!({"max_tokens": 1, "temperature": 0,
                                      "messages": [{"role": "user", "content": PROMPTS[i % 8]}]}))
                        .send()
                        .await;
                    match r {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    }
                })
            })
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        for b in burst {
            *counts.entry(b.await.unwrap()).or_insert(0) += 1;
        }
        eprintln!(
            "1,000 requests in {:.2} s: {counts:?}",
            t.elapsed().as_secs_f64()
        );
        assert!(
            counts.keys().all(|s| *s == 200 || *s == 429),
            "statuses {counts:?}"
        );

        // Clients killed mid-stream.
        for i in 0..16 {
            let mut b = body(i, true);
            b["max_tokens"] = json!(200);
            let mut r = c
                .post(format!("http://{addr}/v1/chat/completions"))
                .json(&b)
                .send()
                .await
                .unwrap();
            let _ = r.chunk().await;
            drop(r);
        }
        // Still serving, with the same answers.
        let (s, text, done) = streamed(&c, addr, &body(3, true)).await;
        assert!(s == 200 && done && text == solo[3], "{s} {text}");
        let rss_after = rss_kib();
        eprintln!(
            "resident memory (server and clients): {rss_before} KiB before, {rss_after} KiB after"
        );
        assert!(
            rss_after < rss_before + 512 * 1024,
            "memory grew from {rss_before} to {rss_after} KiB"
        );
    });
}
