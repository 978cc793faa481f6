//! Training an encoder-decoder on sentence pairs (`tasks::translate`): a run stopped and resumed
//! ends with the same weights as one uninterrupted run; the kept model loads and translates; the
//! dev split holds whole books; bad TSV lines name the line.

use candle_core::Device;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tessera::generate::beam::Seq2SeqGenerate;
use tessera::models::seq2seq::Seq2Seq;
use tessera::tasks::translate::{
    parse_config, source_ids, train_translation, translate_ids, Event, TranslationRun,
};
use tessera::tokenizer::Tokenizer;

/// A toy parallel corpus: number words in English and Spanish, grouped into "books".
fn corpus(dir: &Path) -> PathBuf {
    let en = [
        "one", "two", "three", "four", "five", "six", "seven", "eight",
    ];
    let es = [
        "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho",
    ];
    let mut text = String::from("ref\ten\tes\n");
    let mut k = 0usize;
    for book in ["Gen", "Exod", "Lev", "Num", "Deut", "Josh"] {
        for v in 1..=30 {
            let n = 2 + k % 4;
            let (a, b): (Vec<&str>, Vec<&str>) = (0..n)
                .map(|j| (en[(k + j * 3) % 8], es[(k + j * 3) % 8]))
                .unzip();
            text.push_str(&format!("{book}.1.{v}\t{}\t{}\n", a.join(" "), b.join(" ")));
            k += 1;
        }
    }
    let p = dir.join("pairs.tsv");
    std::fs::write(&p, text).unwrap();
    p
}

fn config(max_steps: usize) -> serde_json::Value {
    json!({"model_type": "marian", "vocab_size": 300, "d_model": 16, "encoder_layers": 1,
           "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
           "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 64,
           "activation_function": "swish", "scale_embedding": true, "dropout": 0.1,
           "pad_token_id": 3, "eos_token_id": 0, "decoder_start_token_id": 3,
           "training": {"vocab_size": 300, "max_tokens": 96, "lr": 3e-3, "warmup_steps": 4,
                        "max_steps": max_steps, "eval_every": 6, "eval_sentences": 8,
                        "dev_fraction": 0.2, "max_len": 32, "checkpoint_every": 5, "seed": 3}})
}

fn run<'a>(
    data: &Path,
    out: &Path,
    resume: bool,
    stop: Option<&'a AtomicBool>,
) -> TranslationRun<'a> {
    TranslationRun {
        data: data.to_path_buf(),
        src: "en".into(),
        tgt: "es".into(),
        out: out.to_path_buf(),
        resume,
        tokenizer: None,
        max_time: None,
        stop,
    }
}

#[test]
fn resumed_training_equals_uninterrupted_and_the_best_model_translates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = corpus(tmp.path());
    let cfg = || Some(parse_config(&config(14)).unwrap());
    let dev = Device::Cpu;
    // Uninterrupted.
    let whole = tmp.path().join("whole");
    let mut dev_groups = vec![];
    train_translation(&run(&data, &whole, false, None), cfg(), &dev, &mut |e| {
        if let Event::Start { dev_groups: g, .. } = e {
            dev_groups = g.to_vec();
        }
    })
    .unwrap();
    // Stopped after step 8 (between checkpoints and evaluations), then resumed.
    let parts = tmp.path().join("parts");
    let stop = AtomicBool::new(false);
    train_translation(
        &run(&data, &parts, false, Some(&stop)),
        cfg(),
        &dev,
        &mut |e| {
            if let Event::Step(s) = e {
                if s.step == 8 {
                    stop.store(true, Ordering::SeqCst);
                }
            }
        },
    )
    .unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(parts.join("checkpoint/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 8);
    train_translation(&run(&data, &parts, true, None), None, &dev, &mut |_| {}).unwrap();
    let a = std::fs::read(whole.join("checkpoint/model.safetensors")).unwrap();
    let b = std::fs::read(parts.join("checkpoint/model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
    // The metrics log holds each step once.
    let log = std::fs::read_to_string(parts.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=14).collect::<Vec<u64>>());
    // Whole books held out.
    assert!(
        !dev_groups.is_empty() && dev_groups.len() < 6,
        "{dev_groups:?}"
    );
    // The kept model loads in Marian layout and translates (empty input: empty output).
    let best = whole.join("best");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(best.join(f).is_file(), "{f}");
    }
    let model = Seq2Seq::load_dir(&best, candle_core::DType::F32, &dev).unwrap();
    let tok = Tokenizer::from_file(best.join("tokenizer.json")).unwrap();
    let eos = model.cfg.eos().unwrap();
    let ids = source_ids(&tok, "one two three", eos).unwrap();
    let out = translate_ids(&model, &[&ids], &Seq2SeqGenerate::default(), 8).unwrap();
    assert_eq!(out.len(), 1);
    assert!(!out[0][0].tokens.is_empty());
    assert!(translate_ids(&model, &[], &Seq2SeqGenerate::default(), 8)
        .unwrap()
        .is_empty());
}

#[test]
fn bad_pair_files_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.tsv");
    std::fs::write(&p, "ref\ten\tes\nGen.1.1\ta\tb\nGen.1.2\tonly two\n").unwrap();
    let e = train_translation(
        &run(&p, &tmp.path().join("o"), false, None),
        Some(parse_config(&config(4)).unwrap()),
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad.tsv:3: 2 tab-separated fields"), "{e}");
    let mut v = config(4);
    v["training"]["label_smoothing"] = json!(1.5);
    assert!(parse_config(&v)
        .unwrap_err()
        .to_string()
        .contains("label_smoothing"));
    let mut v = config(4);
    v["training"]["wiggle"] = json!(1);
    assert!(parse_config(&v).unwrap_err().to_string().contains("wiggle"));
}
