//! SmolLM2-135M-Instruct loaded from its GGUF (weights dequantized to f32, f32 activations and KV
//! cache) against the `transformers` block of `fixtures/reference/smollm2_logits.json`, which ran
//! the same arithmetic: argmax identical at every prompt position, the top-20 and fixed-id logits
//! and log-softmax values within 1e-3 (two independent f32 implementations agreed within 9e-5;
//! the fixture rounds to 6 decimals), and the 32-step greedy continuations identical.

use serde_json::Value;
use tessera::models::gguf_loader::load_gguf_file;
use tessera::models::Transformer;
use tessera::{DType, Device, Tensor};

const TOL: f32 = 1e-3;

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/reference/smollm2_logits.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixtures/reference")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + row
            .iter()
            .map(|&x| ((x - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    row.iter().map(|&x| x - lse).collect()
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// (T, V) logits for `prompt`, and the 32-step greedy continuation (each step a full forward
/// pass: the tensor model has no KV cache; incremental decoding is the inference backend's).
fn run(model: &Transformer, prompt: &[u32]) -> (Vec<Vec<f32>>, Vec<u32>) {
    let dev = Device::Cpu;
    let logits = |ids: &[u32]| -> Vec<Vec<f32>> {
        let input = Tensor::new(ids, &dev).unwrap().unsqueeze(0).unwrap();
        model
            .forward(&input)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap() // (T, V)
    };
    let rows = logits(prompt);
    let mut seq = prompt.to_vec();
    let mut greedy = vec![argmax(rows.last().unwrap())];
    while greedy.len() < 32 {
        seq.push(*greedy.last().unwrap());
        greedy.push(argmax(logits(&seq).last().unwrap()));
    }
    (rows, greedy)
}

#[test]
fn smollm2_matches_transformers() {
    let fx = fixture();
    let path = tessera::hub::resolve("smollm2-135m-instruct").expect("fetch smollm2-135m-instruct");
    tessera::hub::check_sha256(&path, fx["model"]["sha256"].as_str().unwrap()).unwrap();
    let model = load_gguf_file(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.cfg.num_layers, 30);
    assert_eq!(
        (
            model.cfg.num_heads,
            model.cfg.num_kv_heads,
            model.cfg.head_dim
        ),
        (9, 3, 64)
    );
    let mut worst = 0f32;
    for p in fx["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap_or("?").to_string();
        let r = &p["transformers"];
        let prompt = ids(&p["ids"]);
        let (rows, greedy) = run(&model, &prompt);
        let got_argmax: Vec<u32> = rows.iter().map(|r| argmax(r)).collect();
        assert_eq!(
            got_argmax,
            ids(&r["argmax_all_positions"]),
            "{name}: argmax per position"
        );
        let last = rows.last().unwrap();
        let lsm = log_softmax(last);
        for e in r["top20"].as_array().unwrap() {
            let e = e.as_array().unwrap();
            let id = e[0].as_u64().unwrap() as usize;
            let (logit, ls) = (e[1].as_f64().unwrap() as f32, e[2].as_f64().unwrap() as f32);
            let d = (last[id] - logit).abs().max((lsm[id] - ls).abs());
            worst = worst.max(d);
            assert!(
                d < TOL,
                "{name}: id {id}: logit {} vs {logit}, log-softmax {} vs {ls}",
                last[id],
                lsm[id]
            );
        }
        for (id, v) in r["fixed_ids_logit"].as_object().unwrap() {
            let id: usize = id.parse().unwrap();
            let d = (last[id] - v.as_f64().unwrap() as f32).abs();
            worst = worst.max(d);
            assert!(d < TOL, "{name}: fixed id {id}: {} vs {v}", last[id]);
        }
        for (id, v) in r["fixed_ids_log_softmax"].as_object().unwrap() {
            let id: usize = id.parse().unwrap();
            let d = (lsm[id] - v.as_f64().unwrap() as f32).abs();
            worst = worst.max(d);
            assert!(
                d < TOL,
                "{name}: fixed id {id} log-softmax: {} vs {v}",
                lsm[id]
            );
        }
        assert_eq!(
            greedy,
            ids(&r["greedy32"]["ids"]),
            "{name}: greedy continuation"
        );
    }
    eprintln!("largest difference from transformers: {worst:.2e}");
}
