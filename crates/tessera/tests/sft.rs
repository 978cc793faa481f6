//! Supervised fine-tuning: the answer mask on a rendered conversation, bad data lines, LoRA
//! through frozen quantized weights (gradients equal to the dequantized dense model's), and
//! resume == uninterrupted on SmolLM2.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use tessera::kernels::quant::{quantize, QMatrix, QType};
use tessera::models::lora::{self, LoraConfig};
use tessera::models::params::ParamStore;
use tessera::models::transformer::IGNORE;
use tessera::models::{Transformer, TransformerConfig};
use tessera::tasks::sft::{self, Event, SftOptions, SftRun};
use tessera::tokenizer::chat::{Message, ModelTokenizer};
use tessera::util::rng::Rng;

fn smollm2() -> std::path::PathBuf {
    tessera::hub::resolve("smollm2-135m-instruct").unwrap()
}

#[test]
fn answer_mask_covers_assistant_turns_and_their_end_tokens() {
    let tok = ModelTokenizer::load(&smollm2()).unwrap();
    let msgs = vec![
        Message::new("system", "Answer in one word."),
        Message::new("user", "Is the sky blue?"),
        Message::new("assistant", "yes"),
        Message::new("user", "Is grass red?"),
        Message::new("assistant", "no"),
    ];
    let (ids, answer) = sft::encode_conversation(&tok, &msgs).unwrap();
    assert_eq!(ids, tok.prompt_ids(&msgs, false).unwrap());
    // The answer tokens, decoded run by run: each assistant turn and its end-of-turn token.
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (&id, &a) in ids.iter().zip(&answer) {
        if a {
            cur.push(id);
        } else if !cur.is_empty() {
            runs.push(tok.tokenizer.decode(&cur).unwrap());
            cur.clear();
        }
    }
    if !cur.is_empty() {
        runs.push(tok.tokenizer.decode(&cur).unwrap());
    }
    let im_end = tok.eos_id.unwrap();
    assert_eq!(tok.tokenizer.id_to_token(im_end).unwrap(), "<|im_end|>");
    let raw: Vec<Vec<u32>> = {
        let mut v = Vec::new();
        let mut c = Vec::new();
        for (&id, &a) in ids.iter().zip(&answer) {
            if a {
                c.push(id);
            } else if !c.is_empty() {
                v.push(std::mem::take(&mut c));
            }
        }
        v
    };
    assert_eq!(raw.len(), 2, "two assistant turns: {runs:?}");
    for (r, word) in raw.iter().zip(["yes", "no"]) {
        assert_eq!(*r.last().unwrap(), im_end, "each run ends with <|im_end|>");
        assert_eq!(tok.tokenizer.decode(&r[..r.len() - 1]).unwrap(), word);
    }
    // The example shifts by one: position j predicts token j+1 where it is an answer token.
    let ex = sft::example(&tok, &msgs, 1).unwrap();
    assert_eq!(ex.ids, ids[..ids.len() - 1]);
    for j in 0..ex.targets.len() {
        let want = if answer[j + 1] { ids[j + 1] } else { IGNORE };
        assert_eq!(ex.targets[j], want);
    }
    assert_eq!(ex.answer_tokens(), raw.iter().map(Vec::len).sum::<usize>());
}

#[test]
fn bad_lines_are_named_or_skipped_and_counted() {
    for (line, want) in [
        ("{not json", "not valid JSON"),
        (
            r#"{"messages":[{"role":"wizard","content":"x"},{"role":"assistant","content":"y"}]}"#,
            "unknown role 'wizard'",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            "no assistant turn",
        ),
        (r#"{"text":"x"}"#, "expected"),
        (
            r#"{"messages":[{"role":"user","content":3},{"role":"assistant","content":"y"}]}"#,
            "messages[0]: 'content' must be a string",
        ),
    ] {
        let e = sft::parse_line(line).unwrap_err().to_string();
        assert!(e.contains(want), "{line}: {e}");
    }
    assert_eq!(
        sft::parse_line(r#"{"prompt":"2+2?","completion":"4"}"#).unwrap(),
        vec![Message::new("user", "2+2?"), Message::new("assistant", "4")]
    );
    let tok = ModelTokenizer::load(&smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let long = "word ".repeat(400);
    std::fs::write(
        &path,
        format!(
            "{}\n\n{}\n{}\n{}\n",
            r#"{"prompt":"hi","completion":"hello"}"#,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            serde_json::json!({"prompt": long, "completion": "ok"}),
            r#"{"prompt":"a","completion":"b"}"#
        ),
    )
    .unwrap();
    let e = sft::read_examples(&path, &tok, 128, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("d.jsonl:3:") && e.contains("no assistant turn"),
        "{e}"
    );
    let (good, bad) = sft::read_examples(&path, &tok, 128, true).unwrap();
    assert_eq!(good.len(), 2);
    assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![3, 4]);
    assert!(
        bad[1].reason.contains("over the limit of 128"),
        "{}",
        bad[1].reason
    );
    // A model's context below --max-len: the line is over the context, named as such.
    let (_, bad) = sft::read_examples_within(&path, &tok, 4096, 256, true).unwrap();
    assert!(
        bad[1]
            .reason
            .contains("over the model's context of 256 tokens"),
        "{}",
        bad[1].reason
    );
}

/// A tiny Llama-layout config (block projections a multiple of 32 wide, for Q8_0/Q4_1 rows).
fn tiny() -> TransformerConfig {
    TransformerConfig::from_hf_json(&serde_json::json!({
        "model_type": "llama", "vocab_size": 50, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": true
    }))
    .unwrap()
}

#[test]
fn lora_through_frozen_quantized_weights_has_the_dense_gradients() {
    let cfg = tiny();
    let mut rng = Rng::new(5);
    let base = ParamStore::init(&cfg, &mut rng, DType::F32, &Device::Cpu).unwrap();
    for qtype in [QType::Q8_0, QType::Q4_1] {
        // Quantize every block projection; the dense model gets the dequantized values.
        let mut dense: HashMap<String, Tensor> = HashMap::new();
        let mut frozen = HashMap::new();
        let mut rest = HashMap::new();
        for (spec, var) in base.specs.iter().zip(&base.vars) {
            let t = var.as_tensor().detach();
            if spec.name.starts_with("model.layers.") && spec.name.ends_with("_proj.weight") {
                let (r, c) = t.dims2().unwrap();
                let bytes =
                    quantize(qtype, &t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap();
                let q = QMatrix::new(qtype, r, c, bytes).unwrap();
                let deq = Tensor::from_vec(q.dequantize(), (r, c), &Device::Cpu).unwrap();
                dense.insert(spec.name.clone(), deq);
                frozen.insert(spec.name.clone(), Arc::new(q));
            } else {
                dense.insert(spec.name.clone(), t.clone());
                rest.insert(spec.name.clone(), t);
            }
        }
        let p = std::path::Path::new("<test>");
        let mut m_dense = Transformer::from_tensors(&cfg, &dense, p).unwrap();
        let mut m_frozen = Transformer::from_parts(&cfg, &rest, &frozen, "", p).unwrap();
        let targets: Vec<String> = ["q", "k", "v", "o", "gate", "up", "down"]
            .map(String::from)
            .to_vec();
        let lcfg = LoraConfig::new(4, 8.0, &targets, &cfg).unwrap();
        let mut lrng = Rng::new(9);
        let adapters = ParamStore::init_specs(
            lcfg.specs(&cfg).unwrap(),
            &mut lrng,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        // B starts at zero; give it values so that every gradient path is exercised.
        for (s, v) in adapters.specs.iter().zip(&adapters.vars) {
            if s.name.ends_with("lora_B.weight") {
                let t = Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu).unwrap();
                v.set(&t).unwrap();
            }
        }
        lora::attach(&mut m_dense, &lcfg, &adapters.tensors()).unwrap();
        lora::attach(&mut m_frozen, &lcfg, &adapters.tensors()).unwrap();
        let (b, t) = (2, 12);
        let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 50) as u32).collect();
        let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
        let tg: Vec<u32> = (0..b * t)
            .map(|i| {
                if i % 3 == 0 {
                    IGNORE
                } else {
                    (i * 11 % 50) as u32
                }
            })
            .collect();
        let l_dense = m_dense.loss_masked(&ids, &tg, None).unwrap();
        let l_frozen = m_frozen.loss_masked(&ids, &tg, None).unwrap();
        let (a, c) = (
            l_dense.to_scalar::<f32>().unwrap(),
            l_frozen.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (a - c).abs() <= 1e-5 * a.abs().max(1.0),
            "{qtype}: loss {a} vs {c}"
        );
        let g_dense = l_dense.backward().unwrap();
        let g_frozen = l_frozen.backward().unwrap();
        for (s, v) in adapters.specs.iter().zip(&adapters.vars) {
            let gd = g_dense.get(v.as_tensor()).expect("dense gradient");
            let gf = g_frozen.get(v.as_tensor()).expect("frozen gradient");
            let scale = gd
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = (gd - gf)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff <= 1e-5 * scale.max(1e-3),
                "{qtype} {}: gradient differs by {diff} (scale {scale})",
                s.name
            );
        }
        // Nothing but the adapters is trained: the frozen model's base has no variables.
        assert!(g_frozen.get(&rest["model.embed_tokens.weight"]).is_none());
    }
}

fn write_lines(path: &std::path::Path, n: usize, offset: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let k = i + offset;
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("Is {k} even? One word.")},
                {"role": "assistant", "content": if k.is_multiple_of(2) { "yes" } else { "no" }}]})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// `n_train` and `n_dev` conversations ([`write_lines`]) in `dir`, and a run on SmolLM2 over
/// them into `out`.
fn smollm2_run<'a>(
    dir: &std::path::Path,
    (n_train, n_dev): (usize, usize),
    out: &std::path::Path,
    resume: bool,
    stop: Option<&'a std::sync::atomic::AtomicBool>,
) -> SftRun<'a> {
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    write_lines(&train, n_train, 0);
    write_lines(&dev, n_dev, 100);
    SftRun {
        model: "smollm2-135m-instruct".into(),
        model_path: smollm2(),
        train,
        dev: Some(dev),
        out: out.to_path_buf(),
        resume,
        max_time: None,
        stop,
    }
}

#[test]
fn resume_equals_uninterrupted_lora_training() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SftOptions {
        lora_rank: 4,
        lora_alpha: 8.0,
        lora_targets: vec!["q".into(), "v".into()],
        batch_size: 2,
        max_steps: 4,
        lr: 1e-3,
        checkpoint_every: 0,
        ..SftOptions::default()
    };
    let run = |out: &std::path::Path, resume: bool, stop_at: Option<usize>| {
        let flag = std::sync::atomic::AtomicBool::new(false);
        let r = smollm2_run(dir.path(), (8, 4), out, resume, Some(&flag));
        let mut losses = Vec::new();
        sft::finetune_chat(&r, &opts, &mut |e| {
            if let Event::Step(s) = e {
                losses.push(s.loss);
                if Some(s.step) == stop_at {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
        .unwrap();
        losses
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let full = run(&a, false, None);
    let mut split = run(&b, false, Some(2));
    assert_eq!(split.len(), 2);
    split.extend(run(&b, true, None));
    assert_eq!(full, split, "losses of 4 steps vs 2 + 2 resumed");
    let wa = std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("adapter_model.safetensors")).unwrap();
    assert!(wa == wb, "the resumed run's adapter differs");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(cfg["r"], 4);
}

/// `fixtures/peft-lora`: an adapter written by `tessera finetune chat` (rank 2 on q, v, down,
/// trained 4 steps) and the logits transformers + PEFT computed with it on the SmolLM2 GGUF
/// (`scripts/peft_fixture.py`).
#[test]
fn peft_loads_tessera_adapters_with_the_same_logits() {
    let fix = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-lora");
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fix.join("peft_logits.json")).unwrap())
            .unwrap();
    let g = tessera::weights::Gguf::open(smollm2()).unwrap();
    let mut m = tessera::models::gguf_loader::load_gguf(&g, DType::F32, &Device::Cpu).unwrap();
    let adapter = lora::Adapter::load(&fix, "smollm2-135m-instruct", &m.cfg).unwrap();
    assert_eq!(adapter.lora.targets, vec!["q", "v", "down"]);
    lora::attach(&mut m, &adapter.lora, &adapter.tensors).unwrap();
    let ids: Vec<u32> = f["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let n = ids.len();
    let logits = m
        .forward(&Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let cols = f["cols"].as_u64().unwrap() as usize;
    let mut worst = 0f32;
    for (i, row) in f["logits"].as_array().unwrap().iter().enumerate() {
        for (j, v) in row.as_array().unwrap().iter().enumerate().take(cols) {
            worst = worst.max((logits[i][j] - v.as_f64().unwrap() as f32).abs());
        }
        let arg = logits[i]
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |a, (j, &z)| if z > a.1 { (j, z) } else { a },
            )
            .0;
        assert_eq!(arg as u64, f["argmax"][i].as_u64().unwrap(), "position {i}");
    }
    assert!(worst <= 1e-4, "logits differ from PEFT's by {worst}");
    // The same adapter changes the model: without it the logits move.
    let plain = tessera::models::gguf_loader::load_gguf(&g, DType::F32, &Device::Cpu).unwrap();
    let ids2: Vec<u32> = f["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let base = plain
        .forward(&Tensor::from_vec(ids2, (1, n), &Device::Cpu).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let moved = base
        .iter()
        .zip(&logits)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        })
        .fold(0f32, f32::max);
    assert!(moved > 1e-2, "the adapter has no effect ({moved})");
}

#[test]
fn an_adapter_for_another_base_is_refused_with_both_names() {
    let fix = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-lora");
    let mut cfg = tiny();
    cfg.num_layers = 3;
    let e = lora::Adapter::load(&fix, "tiny-model", &cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("smollm2-135m-instruct") && e.contains("tiny-model"),
        "{e}"
    );
}

/// `--full` (LoRA rank 0): every weight of the dequantized model trains; the output is a Hugging
/// Face model directory (config, weights, tokenizer and its chat template) that loads again, whose
/// weights moved from the base's and whose chat template is the base's.
#[test]
fn full_fine_tuning_trains_every_weight_and_writes_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SftOptions {
        lora_rank: 0,
        batch_size: 2,
        epochs: 2,
        lr: 1e-4,
        checkpoint_every: 0,
        ..SftOptions::default()
    };
    let out = dir.path().join("full");
    let r = smollm2_run(dir.path(), (4, 2), &out, false, None);
    let mut losses = Vec::new();
    let mut trainable = 0;
    sft::finetune_chat(&r, &opts, &mut |e| match e {
        Event::Step(s) => losses.push(s.loss),
        Event::Start { trainable: n, .. } => trainable = n,
        _ => {}
    })
    .unwrap();
    let g = tessera::weights::Gguf::open(smollm2()).unwrap();
    let base = tessera::models::gguf_loader::load_gguf(&g, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(trainable, base.cfg.num_params(), "every weight trains");
    // Two epochs over the same 4 examples: the second sees them with a lower loss.
    assert_eq!(losses.len(), 4);
    assert!(losses[2] + losses[3] < losses[0] + losses[1], "{losses:?}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let tuned = Transformer::load_dir(&out, DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 504, 3300, 30]], &Device::Cpu).unwrap();
    let a = tuned.forward(&ids).unwrap();
    let b = base.forward(&ids).unwrap();
    let moved = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(
        moved.to_scalar::<f32>().unwrap() > 1e-3,
        "the weights did not move"
    );
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(tc["chat_template"].as_str().unwrap().contains("im_start"));
}
