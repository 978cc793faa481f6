//! `tessera serve` end to end on loopback with SmolLM2-135M-Instruct (fetched on first use):
//! the OpenAI shapes (chat and completions, streaming and not, usage, n, logprobs), continuous
//! batching (concurrent requests each get exactly what they get alone), cancellation, the queue
//! limit (429), the API key, and bad input (OpenAI error objects, never a panic).

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tessera_serve::ServeOptions;

mod common;
use common::{spawn, start};

fn opts() -> ServeOptions {
    ServeOptions {
        port: 0,
        parallel: 4,
        ctx: 512,
        queue: 64,
        ..Default::default()
    }
}

/// The shared server of most tests.
fn server() -> SocketAddr {
    static S: OnceLock<SocketAddr> = OnceLock::new();
    *S.get_or_init(|| start(opts()))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A GET's body as text.
async fn get(addr: SocketAddr, path: &str) -> String {
    client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A streamed request: the `data:` payloads in order.
async fn stream(addr: SocketAddr, path: &str, body: &Value) -> Vec<String> {
    let r = client()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
        })
        .collect()
}

fn chat_body(q: &str, max_tokens: usize) -> Value {
    json!({"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": max_tokens,
           "messages": [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": q}]})
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn health_models_tokenize() {
    let addr = server();
    rt().block_on(async {
        let h: Value = serde_json::from_str(&get(addr, "/health").await).unwrap();
        assert_eq!(h["status"], "ok");
        let m: Value = serde_json::from_str(&get(addr, "/v1/models").await).unwrap();
        assert_eq!(m["object"], "list");
        assert_eq!(m["data"][0]["id"], "smollm2-135m-instruct");
        let (s, t) = post(addr, "/tokenize", &json!({"content": "Hello world"})).await;
        assert_eq!(s, 200);
        let (s, d) = post(addr, "/detokenize", &json!({"tokens": t["tokens"]})).await;
        assert_eq!((s, d["content"].as_str()), (200, Some("Hello world")));
        let page = get(addr, "/").await;
        assert!(page.contains("tessera chat") && page.contains("/v1/chat/completions"));
    });
}

/// Greedy chat, whole and streamed: the same text; usage counts exact; the stream ends with
/// `[DONE]`; the greedy answer equals `tessera generate`'s for the same prompt.
#[test]
fn chat_whole_and_streamed_agree_with_the_library() {
    let addr = server();
    let q = "What is the capital of France?";
    let (status, whole) = rt().block_on(post(addr, "/v1/chat/completions", &chat_body(q, 24)));
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    let text = content(&whole);
    // The library, alone: same template, greedy.
    let path = tessera::hub::resolve("smollm2-135m-instruct").unwrap();
    let (model, tok) = tessera::generate::load(&path).unwrap();
    let msgs = [
        tessera::tokenizer::chat::Message::new("system", "You are a helpful assistant."),
        tessera::tokenizer::chat::Message::new("user", q),
    ];
    let ids = tok.prompt_ids(&msgs, true).unwrap();
    let params = tessera::generate::SamplingParams {
        temperature: 0.0,
        max_tokens: 24,
        ..Default::default()
    };
    let g = tessera::generate::generate(&model, &tok.tokenizer, &ids, &params, |_| true).unwrap();
    assert_eq!(text, g.text);
    let usage = &whole["usage"];
    assert_eq!(usage["prompt_tokens"], ids.len());
    assert_eq!(usage["completion_tokens"], g.ids.len());
    assert_eq!(usage["total_tokens"], ids.len() + g.ids.len());

    let mut body = chat_body(q, 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = rt().block_on(stream(addr, "/v1/chat/completions", &body));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut streamed = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"].get(0) {
            if let Some(t) = c["delta"]["content"].as_str() {
                streamed.push_str(t);
            }
            if !c["finish_reason"].is_null() {
                finish = Some(c["finish_reason"].clone());
            }
        } else {
            usage = Some(v["usage"].clone());
        }
    }
    assert_eq!(streamed, text);
    assert_eq!(finish, Some(whole["choices"][0]["finish_reason"].clone()));
    assert_eq!(usage.unwrap(), whole["usage"]);
}

/// Continuous batching: concurrent greedy requests (joining and leaving the batch at different
/// steps) each get exactly the answer they get when served alone.
#[test]
fn concurrent_requests_do_not_mix() {
    let addr = server();
    let questions = [
        "Name three colors.",
        "What is 2 + 2?",
        "Write a haiku about the sea.",
        "Who wrote Hamlet?",
        "Say hello in Spanish.",
        "What is the boiling point of water?",
    ];
    let lens = [12, 20, 28, 16, 8, 24];
    let alone: Vec<String> = questions
        .iter()
        .zip(lens)
        .map(|(q, n)| {
            let (s, v) = rt().block_on(post(addr, "/v1/chat/completions", &chat_body(q, n)));
            assert_eq!(s, 200, "{v}");
            content(&v)
        })
        .collect();
    let together: Vec<String> = rt().block_on(async {
        let tasks: Vec<_> = questions
            .iter()
            .zip(lens)
            .map(|(q, n)| {
                let body = chat_body(q, n);
                tokio::spawn(async move { post(addr, "/v1/chat/completions", &body).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            let (s, v) = t.await.unwrap();
            assert_eq!(s, 200, "{v}");
            out.push(content(&v));
        }
        out
    });
    assert_eq!(alone, together);
}

#[test]
fn n_choices_logprobs_and_completions() {
    let addr = server();
    rt().block_on(async {
        let mut body = chat_body("Tell me a fact.", 8);
        body["n"] = json!(3);
        body["temperature"] = json!(0.9);
        body["seed"] = json!(7);
        let (s, v) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(s, 200, "{v}");
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
        }
        // The same seed gives the same choices again.
        let (_, again) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(v["choices"], again["choices"]);

        let mut body = chat_body("Tell me a fact.", 5);
        body["logprobs"] = json!(true);
        body["top_logprobs"] = json!(3);
        let (s, v) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(s, 200, "{v}");
        let lps = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
        assert_eq!(
            lps.len(),
            v["usage"]["completion_tokens"].as_u64().unwrap() as usize
        );
        let mut joined = String::new();
        for e in lps {
            let top = e["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 3);
            let lp = e["logprob"].as_f64().unwrap();
            assert!(lp <= 0.0);
            // Greedy: the chosen token is the most likely one.
            assert_eq!(top[0]["token"], e["token"]);
            assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-6);
            assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
            joined.push_str(e["token"].as_str().unwrap());
        }
        assert_eq!(joined, content(&v));

        let (s, v) = post(
            addr,
            "/v1/completions",
            &json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0,
                    "logprobs": 2}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["object"], "text_completion");
        let text = v["choices"][0]["text"].as_str().unwrap().to_string();
        assert_eq!(
            v["choices"][0]["logprobs"]["tokens"]
                .as_array()
                .unwrap()
                .len(),
            v["usage"]["completion_tokens"].as_u64().unwrap() as usize
        );
        let events = stream(
            addr,
            "/v1/completions",
            &json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0,
                    "stream": true}),
        )
        .await;
        let streamed: String = events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| {
                let v: Value = serde_json::from_str(e).unwrap();
                v["choices"][0]["text"].as_str().unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(streamed, text);
        // Stop strings cut the text.
        let (s, v) = post(
            addr,
            "/v1/completions",
            &json!({"prompt": [1, 504, 3458], "max_tokens": 30, "temperature": 0, "stop": ["e"]}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let t = v["choices"][0]["text"].as_str().unwrap();
        assert!(!t.contains('e'), "{t}");
    });
}

/// Bad input gets OpenAI's error object with the right status; the server keeps serving.
#[test]
fn bad_input_is_a_clear_error() {
    let addr = server();
    rt().block_on(async {
        let c = client();
        let url = format!("http://{addr}/v1/chat/completions");
        let check = |status: u16, want: u16, body: &str, what: &str| {
            assert_eq!(status, want, "{what}: {body}");
            let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: {body}"));
            assert!(v["error"]["message"].is_string(), "{what}: {body}");
        };
        let send = |b: reqwest::RequestBuilder| async move {
            let r = b.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        let (s, b) = send(
            c.post(&url)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
        check(s, 400, &b, "malformed JSON");
        let (s, b) = send(c.post(&url).header("content-type", "text/plain").body("{}")).await;
        check(s, 415, &b, "content type");
        let (s, b) = send(
            c.post(&url)
                .header("content-type", "application/json")
                .body(vec![b'{', 0xff, 0xfe, b'}']),
        )
        .await;
        check(s, 400, &b, "invalid UTF-8");
        let (s, b) = send(
            c.post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 10 << 20]),
        )
        .await;
        check(s, 413, &b, "10 MB body");
        let long = "word ".repeat(2000);
        let (s, v) = post(addr, "/v1/chat/completions", &chat_body(&long, 8)).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        let mut body = chat_body("hi", 8);
        body["temperature"] = json!(5);
        let (s, v) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (400, Some("temperature"))
        );
        let (s, v) = post(addr, "/v1/chat/completions", &json!({"messages": []})).await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = post(
            addr,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = post(addr, "/v1/nothing", &json!({})).await;
        assert_eq!(s, 404, "{v}");
        // Unknown fields are ignored.
        let mut body = chat_body("hi", 2);
        body["frobnicate"] = json!({"x": 1});
        body["user"] = json!("someone");
        let (s, v) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(s, 200, "{v}");
    });
}

/// A client that goes away mid-stream is cancelled and its slot freed: a full set of new
/// requests is served right after.
#[test]
fn disconnected_clients_are_cancelled() {
    let addr = server();
    rt().block_on(async {
        for _ in 0..4 {
            let mut body = chat_body("Write a very long story about a dragon.", 400);
            body["stream"] = json!(true);
            let mut r = client()
                .post(format!("http://{addr}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            // Read the first piece, then drop the connection.
            let first = r.chunk().await.unwrap();
            assert!(first.is_some());
            drop(r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = get(addr, "/metrics").await;
        let cancelled: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("tessera_cancelled_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(cancelled >= 4, "{m}");
        assert!(m.contains("tessera_time_to_first_token_seconds_bucket"));
        let t = std::time::Instant::now();
        let (s, _) = post(addr, "/v1/chat/completions", &chat_body("hi", 4)).await;
        assert_eq!(s, 200);
        assert!(t.elapsed() < Duration::from_secs(60));
    });
}

#[test]
fn api_key_and_queue_limit() {
    let addr = start(ServeOptions {
        port: 0,
        parallel: 1,
        ctx: 256,
        queue: 2,
        api_key: Some("sekrit".into()),
        ..Default::default()
    });
    rt().block_on(async {
        let c = client();
        let r = c
            .get(format!("http://{addr}/v1/models"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
        let r = c
            .get(format!("http://{addr}/v1/models"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = c
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = c.get(format!("http://{addr}/health")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // One slot and a queue of two: of 6 concurrent long requests at least the two queued
        // ones succeed, and some are refused with 429 and Retry-After.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    let r = c
                        .post(format!("http://{addr}/v1/chat/completions"))
                        .bearer_auth("sekrit")
                        .json(&chat_body(&format!("Count to {i}."), 24))
                        .send()
                        .await
                        .unwrap();
                    let retry = r.headers().get("retry-after").is_some();
                    (r.status().as_u16(), retry)
                })
            })
            .collect();
        let mut ok = 0;
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                (200, _) => ok += 1,
                (429, true) => busy += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(ok >= 2 && busy >= 1, "ok {ok}, busy {busy}");
    });
}

/// Slow clients (slow-loris: headers or a body dribbled in) are cut off after the timeouts while
/// the server keeps answering others.
#[test]
fn slow_clients_are_cut_off() {
    use std::io::{Read, Write};
    let addr = start(ServeOptions {
        port: 0,
        parallel: 1,
        ctx: 128,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    // Headers never finished.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A body that never arrives in full.
    let mut dribble = std::net::TcpStream::connect(addr).unwrap();
    dribble
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    dribble
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mess",
        )
        .unwrap();
    // Others are served meanwhile.
    let (s, _) = rt().block_on(post(addr, "/v1/chat/completions", &chat_body("hi", 2)));
    assert_eq!(s, 200);
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf); // EOF (or a 408) once the header timeout passes
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "slow headers kept open"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    let mut buf = Vec::new();
    let _ = dribble.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        buf.is_empty() || text.starts_with("HTTP/1.1 4"),
        "slow body: {text}"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "slow body kept open");
}

/// A shutdown signal lets an in-flight stream finish (to `[DONE]`) and then stops the server;
/// new connections are refused.
#[test]
fn shutdown_drains_in_flight_requests() {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions {
        port: 0,
        parallel: 1,
        ctx: 256,
        ..Default::default()
    };
    let (addr, server) = spawn(opts, async move {
        let _ = stop_rx.await;
    });
    rt().block_on(async move {
        let mut body = chat_body("Tell me about the sea.", 40);
        body["stream"] = json!(true);
        body["temperature"] = json!(0.8);
        body["seed"] = json!(1);
        let mut r = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut got = String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()).to_string();
        stop_tx.send(()).unwrap();
        while let Some(c) = r.chunk().await.unwrap() {
            got.push_str(&String::from_utf8_lossy(&c));
        }
        assert!(got.trim_end().ends_with("data: [DONE]"), "{got}");
    });
    server.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
}

/// `response_format` `json_object` and `json_schema`: constrained decoding; the answer always
/// parses (and is an instance of the schema), also when the token budget ends inside it.
#[test]
fn json_mode_output_always_parses() {
    let addr = server();
    rt().block_on(async {
        for (max_tokens, temperature) in [(60, 0.0), (6, 0.0), (40, 1.0), (2, 0.7)] {
            let mut body = chat_body(
                "Give me a JSON object describing a cat, with its name and age.",
                max_tokens,
            );
            body["response_format"] = json!({"type": "json_object"});
            body["temperature"] = json!(temperature);
            body["seed"] = json!(3);
            let (s, v) = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(s, 200, "{v}");
            let text = content(&v);
            let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("max_tokens {max_tokens}: {text:?} does not parse: {e}")
            });
            assert!(parsed.is_object(), "{text}");
        }
        // A schema: every answer is an instance of it (all properties, the right types).
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "color": {"enum": ["black", "white", "orange"]},
            "toys": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "indoor": {"type": "boolean"}}});
        for (max_tokens, temperature) in [(80, 0.0), (7, 0.0), (60, 1.0)] {
            let mut body = chat_body("Describe a cat as JSON.", max_tokens);
            body["response_format"] = json!({"type": "json_schema",
                "json_schema": {"name": "cat", "strict": true, "schema": schema}});
            body["temperature"] = json!(temperature);
            body["seed"] = json!(5);
            let (s, v) = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(s, 200, "{v}");
            let text = content(&v);
            let cat: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
            assert!(cat["name"].is_string(), "{text}");
            assert!(cat["age"].is_i64() || cat["age"].is_u64(), "{text}");
            assert!(
                ["black", "white", "orange"].contains(&cat["color"].as_str().unwrap()),
                "{text}"
            );
            assert!(cat["toys"].as_array().unwrap().len() <= 3, "{text}");
            assert!(cat["indoor"].is_boolean(), "{text}");
            assert_eq!(cat.as_object().unwrap().len(), 5, "{text}");
        }
        let mut body = chat_body("hi", 8);
        body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"a": {"$ref": "#/defs/a"}}}}});
        let (s, v) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (400, Some("response_format"))
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("$ref"),
            "{v}"
        );
        let mut body = chat_body("hi", 8);
        body["response_format"] = json!({"type": "json_object"});
        body["stop"] = json!(["}"]);
        let (s, _) = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(s, 400);
    });
}

/// `--adapter`: a LoRA adapter (PEFT's layout; the fixture `tessera finetune chat` wrote) is merged
/// into the served model: a greedy completion equals the one the same model + adapter gives in
/// process. An adapter trained on a base of another shape is refused at load, naming both.
#[test]
fn a_lora_adapter_is_merged_into_the_served_model() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tessera/tests/fixtures/peft-lora");
    let addr = start(ServeOptions {
        adapter: Some(fixture.clone()),
        parallel: 1,
        ..opts()
    });
    let prompt = "The capital of France is";
    let (status, v) = rt().block_on(post(
        addr,
        "/v1/completions",
        &json!({"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 12,
                "temperature": 0}),
    ));
    assert_eq!(status, 200, "{v}");
    let served = v["choices"][0]["text"].as_str().unwrap().to_string();

    let path = tessera::hub::resolve("smollm2-135m-instruct").unwrap();
    let (model, tok) =
        tessera::generate::load_with_adapter(&path, "smollm2-135m-instruct", Some(&fixture))
            .unwrap();
    let mut ids = tok.tokenizer.encode(prompt).unwrap();
    tok.with_bos(&mut ids);
    let params = tessera::generate::SamplingParams {
        temperature: 0.0,
        max_tokens: 12,
        ..Default::default()
    };
    let local = tessera::generate::generate(&model, &tok.tokenizer, &ids, &params, |_| true)
        .unwrap()
        .text;
    assert_eq!(served, local);
    // The base alone answers differently (the adapter changed the model).
    let (base, _) = tessera::generate::load(&path).unwrap();
    let plain = tessera::generate::generate(&base, &tok.tokenizer, &ids, &params, |_| true)
        .unwrap()
        .text;
    assert_ne!(served, plain, "the adapter changed nothing");

    // An adapter for another base: refused with both names.
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&fixture).unwrap().flatten() {
        std::fs::copy(f.path(), tmp.path().join(f.file_name())).unwrap();
    }
    let meta = tmp.path().join("tessera_adapter.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    m["base"]["name"] = json!("another-model");
    m["base"]["num_layers"] = json!(12);
    std::fs::write(&meta, m.to_string()).unwrap();
    let err = tessera_serve::Server::load(ServeOptions {
        adapter: Some(tmp.path().to_path_buf()),
        ..opts()
    })
    .err()
    .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("another-model") && msg.contains("smollm2-135m-instruct"),
        "{msg}"
    );
}
