//! Model and training invariants: causality, KV-cache equivalence, overfitting, save/load, exact resume.

#[path = "common/runs.rs"]
mod runs;

use runs::weights;
use std::path::PathBuf;
use tessera::models::{ParamStore, PositionKind, Transformer, TransformerConfig};
use tessera::tokenizer::Tokenizer;
use tessera::train::data::{split_text, TokenData};
use tessera::train::optim::AdamW;
use tessera::train::{TrainConfig, Trainer};
use tessera::util::rng::Rng;
use tessera::{DType, Device, Tensor};

fn configs() -> Vec<(&'static str, TransformerConfig)> {
    let gpt2 = serde_json::json!({"model_type": "gpt2", "vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64});
    let llama = serde_json::json!({"model_type": "llama", "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "max_position_embeddings": 64});
    // The GPT-2 layout with a fixed sinusoidal position table instead of a learned one.
    let mut sinusoidal = TransformerConfig::from_hf_json(&gpt2).unwrap();
    sinusoidal.position = PositionKind::Sinusoidal;
    vec![
        ("gpt2", TransformerConfig::from_hf_json(&gpt2).unwrap()),
        ("llama", TransformerConfig::from_hf_json(&llama).unwrap()),
        ("sinusoidal", sinusoidal),
    ]
}

fn model(cfg: &TransformerConfig, dtype: DType) -> (ParamStore, Transformer) {
    let p = ParamStore::init(cfg, &mut Rng::new(12), dtype, &Device::Cpu).unwrap();
    let m = Transformer::from_params(cfg, &p).unwrap();
    (p, m)
}

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// (b, t) token ids below the test vocabulary's 50.
fn random_ids(rng: &mut Rng, b: usize, t: usize) -> Tensor {
    let v: Vec<u32> = (0..b * t).map(|_| rng.below(50) as u32).collect();
    Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn future_tokens_do_not_change_past_logits() {
    for (name, cfg) in configs() {
        let (_, m) = model(&cfg, DType::F64);
        let a = m.forward(&ids(&[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        let b = m.forward(&ids(&[1, 2, 3, 4, 40, 41, 42, 43])).unwrap();
        let d = max_diff(&a.narrow(1, 0, 4).unwrap(), &b.narrow(1, 0, 4).unwrap());
        assert!(d < 1e-12, "{name}: past logits changed by {d}");
        let later = max_diff(&a.narrow(1, 4, 4).unwrap(), &b.narrow(1, 4, 4).unwrap());
        assert!(
            later > 1e-3,
            "{name}: later logits should depend on the changed tokens"
        );
    }
}

/// The inference backend (slices, KV cache) built from the same parameters as the tensor model
/// gives its logits, and decoding with the cache (a prompt chunk, then one token at a time)
/// gives the logits of one pass over the whole sequence.
#[test]
fn kv_cache_decoding_equals_full_forward_and_the_tensor_model() {
    for (name, cfg) in configs() {
        let (p, m) = model(&cfg, DType::F32);
        let engine =
            tessera::infer::Decoder::from_tensors(&cfg, &p.tensors(), std::path::Path::new(name))
                .unwrap();
        let v = cfg.vocab_size;
        let seq = [3u32, 9, 27, 1, 0, 44, 17, 8, 8, 30, 2];
        let full: Vec<f32> = m
            .forward(&ids(&seq))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(); // (T V)
        let mut st = engine.new_state(seq.len()).unwrap();
        let one_pass = engine.forward_all(&mut st, &seq).unwrap();
        let d = full
            .iter()
            .zip(&one_pass)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{name}: inference backend vs tensor model: {d}");
        // A prompt chunk of 4, then one token at a time.
        let mut st = engine.new_state(seq.len()).unwrap();
        let mut inc = engine.forward_all(&mut st, &seq[..4]).unwrap();
        for (i, &t) in seq.iter().enumerate().skip(4) {
            assert_eq!(st.len(), i);
            inc.extend_from_slice(engine.forward(&mut st, &[t]).unwrap());
        }
        assert_eq!(inc.len(), seq.len() * v);
        let d = one_pass
            .iter()
            .zip(&inc)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{name}: cached decoding differs by {d}");
    }
}

/// A batched decode step (several sequences at different positions, one product per weight)
/// equals each sequence's own step, for every layout.
#[test]
fn batched_decode_step_equals_each_sequence_alone() {
    for (name, cfg) in configs() {
        let (p, _) = model(&cfg, DType::F32);
        let engine =
            tessera::infer::Decoder::from_tensors(&cfg, &p.tensors(), std::path::Path::new(name))
                .unwrap();
        let v = cfg.vocab_size;
        let prompts: [&[u32]; 3] = [&[3, 9, 27, 1], &[44], &[17, 8, 8, 30, 2, 5, 6]];
        let mut alone: Vec<_> = prompts
            .iter()
            .map(|_| engine.new_state(16).unwrap())
            .collect();
        let mut together: Vec<_> = prompts
            .iter()
            .map(|_| engine.new_state(16).unwrap())
            .collect();
        for (i, p) in prompts.iter().enumerate() {
            engine.forward(&mut alone[i], p).unwrap();
            engine.forward(&mut together[i], p).unwrap();
        }
        let mut batch = engine.new_batch();
        for step in 0..4u32 {
            let ids = [step + 1, step + 10, step + 20];
            let mut refs: Vec<_> = together.iter_mut().collect();
            let rows = engine.step(&mut batch, &mut refs, &ids).unwrap().to_vec();
            for (i, st) in alone.iter_mut().enumerate() {
                let one = engine.forward(st, &[ids[i]]).unwrap();
                let d = one
                    .iter()
                    .zip(&rows[i * v..(i + 1) * v])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{name}: sequence {i} step {step}: {d}");
            }
        }
    }
}

/// Pre-norm sublayers of fused kernels run as segments while a gradient sink is installed
/// (`kernels::segment`, the training loop's mode): the loss and every parameter's gradient are
/// the graph's, bit for bit, and the blocks' weights really went through the sink.
#[test]
fn segments_give_the_graphs_gradients() {
    use tessera::kernels::segment::Sink;
    for (name, cfg) in configs() {
        let (p, m) = model(&cfg, DType::F32);
        let mut rng = Rng::new(9);
        let (x, y) = (random_ids(&mut rng, 3, 20), random_ids(&mut rng, 3, 20));
        let plain_loss = m.loss(&x, &y, None).unwrap();
        let plain = plain_loss.backward().unwrap();
        let sink = Sink::install();
        let seg_loss = m.loss(&x, &y, None).unwrap();
        let mut seg = seg_loss.backward().unwrap();
        // Before the sink is drained, the blocks' weights have no gradient in the store.
        let in_blocks = |n: &str| n.contains(".h.") || n.contains("layers.");
        let block_weights: Vec<usize> = (0..p.specs.len())
            .filter(|&i| in_blocks(&p.specs[i].name))
            .collect();
        assert!(!block_weights.is_empty(), "{name}: no block weights");
        for &i in &block_weights {
            assert!(
                seg.get(p.vars[i].as_tensor()).is_none(),
                "{name}: {} took the graph's path",
                p.specs[i].name
            );
        }
        sink.drain_into(&mut seg).unwrap();
        assert_eq!(
            plain_loss.to_scalar::<f32>().unwrap(),
            seg_loss.to_scalar::<f32>().unwrap(),
            "{name}: loss"
        );
        for (spec, v) in p.specs.iter().zip(&p.vars) {
            let a = plain.get(v.as_tensor()).unwrap();
            let b = seg
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: {}", spec.name));
            assert_eq!(max_diff(a, b), 0.0, "{name}: gradient of {}", spec.name);
        }
        // Without a sink, the graph's path again (no segment, every gradient in the store).
        let again = m.loss(&x, &y, None).unwrap().backward().unwrap();
        assert!(again.get(p.vars[block_weights[0]].as_tensor()).is_some());
    }
}

#[test]
fn tiny_model_overfits_one_batch() {
    for (name, cfg) in configs() {
        let (p, m) = model(&cfg, DType::F32);
        let mut rng = Rng::new(5);
        let (x, y) = (random_ids(&mut rng, 4, 16), random_ids(&mut rng, 4, 16));
        let mut opt = AdamW::new(&p, 0.9, 0.95, 1e-8, 0.0).unwrap();
        let mut last = f32::INFINITY;
        for _ in 0..300 {
            let loss = m.loss(&x, &y, None).unwrap();
            last = loss.to_scalar().unwrap();
            if last < 0.05 {
                break;
            }
            let g = loss.backward().unwrap();
            let grads: Vec<Tensor> = p
                .vars
                .iter()
                .map(|v| g.get(v.as_tensor()).unwrap().clone())
                .collect();
            opt.step(&p, &grads, 1e-2).unwrap();
        }
        assert!(last < 0.05, "{name}: loss {last} after 300 steps");
    }
}

fn corpus() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/austen-300k.txt");
    std::fs::read_to_string(p).unwrap()[..60_000].to_string()
}

fn trainer(cfg_name: &str, text: &str) -> Trainer {
    let (_, mut cfg) = configs().into_iter().find(|(n, _)| *n == cfg_name).unwrap();
    cfg.dropout = 0.1; // exercise the dropout RNG in the resume check
    let tcfg = TrainConfig {
        batch_size: 4,
        block_size: 32,
        max_steps: 8,
        warmup_steps: 2,
        lr: 3e-3,
        min_lr: 3e-4,
        eval_batches: 2,
        vocab_size: 300,
        grad_accum: 2,
        ..TrainConfig::default()
    };
    let (train_text, _) = split_text(text, tcfg.val_fraction);
    let tok = Tokenizer::train_bpe(&[train_text], tcfg.vocab_size).unwrap();
    cfg.vocab_size = tok.vocab_size();
    let data = TokenData::from_text(&tok, text, tcfg.val_fraction, 0).unwrap();
    Trainer::new(cfg, tcfg, tok, data, &Device::Cpu).unwrap()
}

#[test]
fn save_load_gives_identical_logits() {
    let text = corpus();
    for name in ["gpt2", "llama", "sinusoidal"] {
        let mut t = trainer(name, &text);
        t.train_step().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoint");
        t.save(&ck, 0.0).unwrap();
        let loaded = Transformer::load_dir(&ck, DType::F32, &Device::Cpu).unwrap();
        let x = ids(&[0, 5, 9, 100, 200, 7]);
        let a = t.model.forward(&x).unwrap();
        let b = loaded.forward(&x).unwrap();
        assert_eq!(
            max_diff(&a, &b),
            0.0,
            "{name}: logits changed after save/load"
        );
    }
}

#[test]
fn resume_equals_uninterrupted_training() {
    let text = corpus();
    for name in ["gpt2", "llama", "sinusoidal"] {
        let mut full = trainer(name, &text);
        let full_losses: Vec<f64> = (0..8).map(|_| full.train_step().unwrap().loss).collect();

        let mut first = trainer(name, &text);
        let mut losses: Vec<f64> = (0..4).map(|_| first.train_step().unwrap().loss).collect();
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoint");
        first.save(&ck, 1.0).unwrap();
        drop(first);
        let mut resumed = Trainer::resume(&ck, &text, None, &Device::Cpu).unwrap();
        assert_eq!(resumed.step, 4);
        losses.extend((0..4).map(|_| resumed.train_step().unwrap().loss));
        assert_eq!(losses, full_losses, "{name}: losses differ after resume");
        assert!(
            weights(&resumed) == weights(&full),
            "{name}: weights differ after resume"
        );
    }
}
