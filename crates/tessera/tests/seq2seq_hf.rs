//! The encoder-decoder against transformers: tiny random models written by transformers, each
//! loaded from its directory as the one Transformer configured twice.
//! - `marian-tiny` (`scripts/marian_fixture.py`, `MarianMTModel`): 2 + 2 post-norm layers,
//!   C = 16, 2 encoder and 4 decoder heads, swish MLP, scaled embeddings, sinusoidal positions, a
//!   nonzero `final_logits_bias`.
//! - `t5-tiny` and `t5-gated-tiny` (`scripts/t5_fixture.py`, `T5ForConditionalGeneration`):
//!   pre-norm RMSNorm blocks, unscaled attention, bucketed relative position biases (exact,
//!   logarithmic and capped buckets all reached), a ReLU MLP with the decoder output scaled by
//!   d_model^-0.5, or a gated-GELU MLP with heads of their own width (H·D ≠ C) and 3 + 2 layers.
//!
//! Checks the encoder's output and the logits on padded inputs (1e-4), then greedy and beam
//! search `generate` outputs (tokens identical, sequence scores within 1e-4) for several beam
//! sizes, length penalties, early-stopping modes and n-best counts, and that the inference
//! backend's cached decoding gives the full pass's logits.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tessera::generate::beam::{generate_seq2seq, Seq2SeqGenerate};
use tessera::models::seq2seq::Seq2Seq;

/// The fixture models (directories under `tests/fixtures`).
const MODELS: [&str; 3] = ["marian-tiny", "t5-tiny", "t5-gated-tiny"];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(dir(name).join("expected.json"))
        .expect("run scripts/marian_fixture.py and scripts/t5_fixture.py");
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn model(name: &str) -> Seq2Seq {
    Seq2Seq::load_dir(&dir(name), DType::F32, &Device::Cpu).unwrap()
}

/// The fixture's padded source batch and its mask.
fn source(e: &Value, pad: u32) -> (Tensor, Tensor) {
    let src = ids(&e["src"]);
    let s = src.iter().map(|x| x.len()).max().unwrap();
    let mut flat = vec![];
    let mut mask = vec![];
    for x in &src {
        for i in 0..s {
            flat.push(x.get(i).copied().unwrap_or(pad));
            mask.push(u32::from(i < x.len()));
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(flat, (src.len(), s), &dev).unwrap(),
        Tensor::from_vec(mask, (src.len(), s), &dev).unwrap(),
    )
}

#[test]
fn encoder_output_and_logits_equal_transformers() {
    for name in MODELS {
        encoder_output_and_logits(name);
    }
}

fn encoder_output_and_logits(name: &str) {
    let e = expected(name);
    let m = model(name);
    if name == "marian-tiny" {
        assert_eq!(m.cfg.decoder_start_token_id, 39);
        assert!(m.cfg.decoder.scale_embedding);
    } else {
        assert_eq!(m.cfg.decoder_start_token_id, 0);
        assert_eq!(
            m.cfg.scale_decoder_outputs,
            e["scale_decoder_outputs"].as_bool().unwrap()
        );
    }
    let (src, mask) = source(&e, m.cfg.pad().unwrap());
    let enc = m.encode(&src, &mask, None).unwrap();
    let enc: Vec<f32> = enc.flatten_all().unwrap().to_vec1().unwrap();
    // Padded positions of the encoder output are computed but never read; compare them all
    // (transformers computes them the same way).
    let d = max_diff(&enc, &floats(&e["encoder_hidden"]));
    assert!(d < 1e-4, "{name}: encoder output differs by {d}");
    let dec = ids(&e["decoder_input_ids"]);
    let t = dec[0].len();
    let dec = Tensor::from_vec(dec.concat(), (dec.len(), t), &Device::Cpu).unwrap();
    let logits = m.forward(&src, &mask, &dec).unwrap();
    let shape: Vec<usize> = e["logits_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(logits.dims(), shape.as_slice());
    let logits: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let d = max_diff(&logits, &floats(&e["logits"]));
    assert!(d < 1e-4, "{name}: logits differ by {d}");
}

#[test]
fn greedy_and_beam_search_equal_transformers_generate() {
    for name in MODELS {
        greedy_and_beam_search(name);
    }
}

fn greedy_and_beam_search(name: &str) {
    let e = expected(name);
    let m = model(name);
    let src = ids(&e["src"]);
    let eos = m.cfg.eos().unwrap();
    for case in e["generate"].as_array().unwrap() {
        let s = &case["settings"];
        let opts = Seq2SeqGenerate {
            num_beams: s["num_beams"].as_u64().unwrap() as usize,
            max_new_tokens: s["max_new_tokens"].as_u64().unwrap() as usize,
            length_penalty: s
                .get("length_penalty")
                .and_then(Value::as_f64)
                .unwrap_or(1.0),
            early_stopping: match s.get("early_stopping") {
                Some(Value::Bool(true)) => tessera::generate::beam::EarlyStopping::Yes,
                Some(Value::String(n)) if n == "never" => {
                    tessera::generate::beam::EarlyStopping::Never
                }
                _ => tessera::generate::beam::EarlyStopping::No,
            },
            num_return_sequences: s
                .get("num_return_sequences")
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize,
            sampling: None,
        };
        let srcs: Vec<&[u32]> = src.iter().map(|x| x.as_slice()).collect();
        let out = generate_seq2seq(&m, &srcs, &opts).unwrap();
        let want = ids(&case["sequences"]);
        let want_scores = case.get("scores").map(floats);
        let got: Vec<&tessera::generate::beam::Hypothesis> = out.iter().flatten().collect();
        assert_eq!(got.len(), want.len(), "{name} {s}");
        for (k, (h, w)) in got.iter().zip(&want).enumerate() {
            // transformers starts each sequence with the decoder start token and pads finished
            // ones to the batch's longest (with the pad token, or, in beam search when the pad id
            // is 0, with the end token): a sequence ends at its first end token; one without an
            // end token ran to the length limit, unpadded.
            let mut w: Vec<u32> = w[1..].to_vec();
            if let Some(end) = w.iter().position(|&t| t == eos) {
                w.truncate(end + 1);
            }
            assert_eq!(h.tokens, w, "{name} {s} sequence {k}");
            if let Some(ws) = &want_scores {
                let d = (h.score as f32 - ws[k]).abs();
                assert!(
                    d < 1e-4,
                    "{name} {s} sequence {k}: score {} vs {}",
                    h.score,
                    ws[k]
                );
            }
        }
    }
}

/// The inference backend (KV cache, cross-attention keys/values projected once) gives the logits
/// of the tensor model's full pass, position by position, for each sentence alone (1e-5).
#[test]
fn cached_decoding_equals_the_full_pass() {
    for name in MODELS {
        cached_decoding(name);
    }
}

fn cached_decoding(name: &str) {
    let e = expected(name);
    let m = model(name);
    let (src, mask) = source(&e, m.cfg.pad().unwrap());
    let dec = ids(&e["decoder_input_ids"]);
    let t = dec[0].len();
    let dec_t = Tensor::from_vec(dec.concat(), (dec.len(), t), &Device::Cpu).unwrap();
    let full: Vec<f32> = m
        .forward(&src, &mask, &dec_t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let memory = m.encode(&src, &mask, None).unwrap();
    let backend = m.inference_decoder().unwrap();
    let v = m.cfg.decoder.vocab_size;
    let c = m.cfg.decoder.hidden_size;
    for (b, (x, y)) in ids(&e["src"]).iter().zip(&dec).enumerate() {
        let rows: Vec<f32> = memory
            .get(b)
            .unwrap()
            .narrow(0, 0, x.len())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mem = backend.cross_memory(&rows, x.len()).unwrap();
        let mut st = backend.new_state(16).unwrap();
        backend.set_memory(&mut st, mem).unwrap();
        // Two tokens, then one at a time: the cache carries the rest.
        let mut got = backend.forward_all(&mut st, &y[..2]).unwrap();
        for &tok in &y[2..] {
            got.extend_from_slice(backend.forward(&mut st, &[tok]).unwrap());
        }
        let want = &full[b * t * v..(b + 1) * t * v];
        let d = max_diff(&got, want);
        assert!(d < 1e-5, "{name} sentence {b}: cached logits differ by {d}");
        assert_eq!(rows.len(), x.len() * c);
    }
    // A state without its encoder output is an error, not a panic.
    let mut st = backend.new_state(4).unwrap();
    let err = backend.forward(&mut st, &[1]).unwrap_err().to_string();
    assert!(err.contains("encoder output"), "{err}");
}

/// Sampling: reproducible per seed, a sentence's draw independent of its batch, a near-zero
/// temperature is greedy, and beam search with sampling is refused.
#[test]
fn sampling_is_seeded_per_sentence() {
    use tessera::generate::SamplingParams;
    let e = expected("marian-tiny");
    let m = model("marian-tiny");
    let src = ids(&e["src"]);
    let srcs: Vec<&[u32]> = src.iter().map(|x| x.as_slice()).collect();
    let opts = |t: f32, seed: u64| Seq2SeqGenerate {
        max_new_tokens: 10,
        sampling: Some(SamplingParams {
            temperature: t,
            seed,
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = generate_seq2seq(&m, &srcs, &opts(1.5, 7)).unwrap();
    assert_eq!(a, generate_seq2seq(&m, &srcs, &opts(1.5, 7)).unwrap());
    // The second sentence alone, with the seed it had in the batch (seed + 1).
    let alone = generate_seq2seq(&m, &srcs[1..], &opts(1.5, 8)).unwrap();
    // Same tokens; the score may differ in the last bits (the batch's padding changes the
    // encoder's summation order).
    assert_eq!(alone[0][0].tokens, a[1][0].tokens);
    assert!((alone[0][0].score - a[1][0].score).abs() < 1e-4);
    let greedy = generate_seq2seq(
        &m,
        &srcs,
        &Seq2SeqGenerate {
            max_new_tokens: 10,
            ..Default::default()
        },
    )
    .unwrap();
    let cold: Vec<Vec<u32>> = generate_seq2seq(&m, &srcs, &opts(1e-4, 3))
        .unwrap()
        .iter()
        .map(|h| h[0].tokens.clone())
        .collect();
    let want: Vec<Vec<u32>> = greedy.iter().map(|h| h[0].tokens.clone()).collect();
    assert_eq!(cold, want);
    let mut beam = opts(1.0, 0);
    beam.num_beams = 2;
    assert!(generate_seq2seq(&m, &srcs, &beam).is_err());
}
