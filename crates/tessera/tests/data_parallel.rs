//! Data-parallel training equals one process (ranks as threads of one process, the loop's own
//! communicator for tests; `tessera-cli/tests/distributed.rs` runs the same under `mpirun`).
//!
//! N ranks with global batch B against one process with batch B, same seed: every step's loss
//! and gradient norm within 1e-6 relative, and every weight within 1e-6 × max(1, its tensor's
//! largest magnitude). The sums are taken in another order (each rank's shard, then across ranks), so
//! bits may differ; AdamW's eps is 1e-3 here so that its update is a smooth function of the
//! gradient (with eps = 1e-8 its first updates are about lr·sign(g), and an element whose
//! gradient is near zero flips with the last bit of the sum). All ranks hold bitwise the same
//! weights, and a run resumes with another number of ranks.

#[path = "common/runs.rs"]
mod runs;

use runs::{close_steps, step_lines, weights};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use tessera::dist::threads::ThreadGroup;
use tessera::dist::{Communicator, Single};
use tessera::models::TransformerConfig;
use tessera::tokenizer::Tokenizer;
use tessera::train::data::{split_text, TokenData};
use tessera::train::trainer::{run, RunOptions};
use tessera::train::{TrainConfig, Trainer};
use tessera::Device;

fn corpus() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/austen-300k.txt");
    std::fs::read_to_string(p).unwrap()[..60_000].to_string()
}

fn model_config(arch: &str, vocab: usize) -> TransformerConfig {
    let v = match arch {
        "gpt2" => serde_json::json!({"model_type": "gpt2", "vocab_size": vocab, "n_embd": 32,
            "n_layer": 2, "n_head": 4, "n_positions": 64}),
        _ => serde_json::json!({"model_type": "llama", "vocab_size": vocab, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 48, "max_position_embeddings": 64}),
    };
    TransformerConfig::from_hf_json(&v).unwrap()
}

/// A run's inputs: tokenizer and data made once, each rank builds its trainer from them.
struct Setup {
    arch: &'static str,
    tok: Tokenizer,
    data: TokenData,
    tcfg: TrainConfig,
    dropout: f32,
}

impl Setup {
    fn new(arch: &'static str, dropout: f32) -> Setup {
        let text = corpus();
        let tcfg = TrainConfig {
            // 7 windows: shards of 4+3 (2 ranks) and 3+2+2 (3 ranks).
            batch_size: 7,
            block_size: 32,
            grad_accum: 2,
            max_steps: 6,
            warmup_steps: 2,
            lr: 1e-2,
            min_lr: 1e-3,
            eps: 1e-3,
            eval_every: 3,
            eval_batches: 2,
            checkpoint_every: 0,
            vocab_size: 300,
            ..TrainConfig::default()
        };
        let (train_text, _) = split_text(&text, tcfg.val_fraction);
        let tok = Tokenizer::train_bpe(&[train_text], tcfg.vocab_size).unwrap();
        let data = TokenData::from_text(&tok, &text, tcfg.val_fraction, 0).unwrap();
        Setup {
            arch,
            tok,
            data,
            tcfg,
            dropout,
        }
    }

    fn trainer(&self, max_steps: usize) -> Trainer {
        let mut cfg = model_config(self.arch, self.tok.vocab_size());
        cfg.dropout = self.dropout;
        let mut tcfg = self.tcfg.clone();
        tcfg.max_steps = max_steps;
        Trainer::new(cfg, tcfg, self.tok.clone(), self.data.clone(), &Device::Cpu).unwrap()
    }
}

/// What one rank ended with.
struct Outcome {
    losses: Vec<(f64, f64)>,
    weights: Vec<Vec<f32>>,
}

struct Quiet;
impl tessera::train::trainer::Observer for Quiet {}

/// Train `t` on `comm`'s ranks into `out` (rank 0 writes).
fn train_on(t: &mut Trainer, comm: &dyn Communicator, out: &Path) {
    let stop = AtomicBool::new(false);
    let opts = RunOptions {
        out_dir: out.to_path_buf(),
        max_time: None,
        stop: &stop,
        comm,
    };
    let (_, e) = run(t, &opts, &mut Quiet).unwrap();
    assert_eq!(e.is_some(), comm.rank() == 0, "rank 0 alone evaluates");
}

/// Run `ranks` thread ranks, each starting from `start(rank)`; rank 0's outcome and every
/// rank's weights.
fn ranks_run(
    ranks: usize,
    out: &Path,
    start: impl Fn(usize) -> Trainer + Sync,
) -> (Outcome, Vec<Vec<Vec<f32>>>) {
    let group = ThreadGroup::new(ranks);
    let all: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .ranks()
            .into_iter()
            .map(|c| {
                let start = &start;
                s.spawn(move || {
                    let mut t = start(c.rank());
                    train_on(&mut t, &c, out);
                    weights(&t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (
        Outcome {
            losses: step_lines(out),
            weights: all[0].clone(),
        },
        all,
    )
}

fn assert_close(a: &Outcome, b: &Outcome, what: &str) {
    close_steps(&a.losses, &b.losses, 1e-6, 1e-6, what);
    for (i, (wa, wb)) in a.weights.iter().zip(&b.weights).enumerate() {
        let scale = wa.iter().fold(1f32, |m, x| m.max(x.abs()));
        let diff = wa
            .iter()
            .zip(wb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-6 * scale,
            "{what}: tensor {i} differs by {diff} (largest magnitude {scale})"
        );
    }
}

fn single(setup: &Setup, out: &Path, max_steps: usize) -> Outcome {
    let mut t = setup.trainer(max_steps);
    train_on(&mut t, &Single, out);
    Outcome {
        losses: step_lines(out),
        weights: weights(&t),
    }
}

#[test]
fn two_and_three_ranks_train_as_one_process() {
    for arch in ["gpt2", "llama"] {
        let setup = Setup::new(arch, 0.0);
        let dir = tempfile::tempdir().unwrap();
        let one = single(&setup, &dir.path().join("one"), 6);
        for n in [2, 3] {
            let out = dir.path().join(format!("ranks{n}"));
            let (got, all) = ranks_run(n, &out, |_| setup.trainer(6));
            assert!(
                all.iter().all(|w| *w == all[0]),
                "{arch}: ranks hold different weights"
            );
            assert_close(&one, &got, &format!("{arch}, {n} ranks"));
            // Rank 0 alone wrote the run (metrics of 6 steps and 2 evaluations, checkpoint).
            assert!(out.join("checkpoint/model.safetensors").is_file());
        }
    }
}

#[test]
fn ranks_start_from_rank_0_weights_and_agree_with_dropout() {
    let setup = Setup::new("gpt2", 0.1);
    let dir = tempfile::tempdir().unwrap();
    // Rank 1 starts from other weights (another seed): rank 0's are broadcast first.
    let (_, all) = ranks_run(2, &dir.path().join("r"), |rank| {
        let t = setup.trainer(6);
        if rank == 1 {
            for v in &t.params.vars {
                v.set(&(v.as_tensor() * 3.0).unwrap()).unwrap();
            }
        }
        t
    });
    assert!(all[0] == all[1], "ranks diverged");
    // Each shard draws its own dropout masks: training is not the one-process run's, but it
    // trains (the loss falls).
    let losses = step_lines(&dir.path().join("r"));
    assert!(losses.last().unwrap().0 < losses[0].0, "{losses:?}");
}

#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let setup = Setup::new("gpt2", 0.0);
    let dir = tempfile::tempdir().unwrap();
    // Reference: one process, 3 steps, then resumed to 6.
    let one = dir.path().join("one");
    single(&setup, &one, 3);
    let text = corpus();
    let mut t = Trainer::resume(&one.join("checkpoint"), &text, Some(6), &Device::Cpu).unwrap();
    train_on(&mut t, &Single, &one);
    let reference = Outcome {
        losses: step_lines(&one),
        weights: weights(&t),
    };
    // Two ranks for 3 steps, then three ranks resume to 6.
    let many = dir.path().join("many");
    ranks_run(2, &many, |_| setup.trainer(3));
    let (got, _) = ranks_run(3, &many, |_| {
        Trainer::resume(&many.join("checkpoint"), &text, Some(6), &Device::Cpu).unwrap()
    });
    assert_close(&reference, &got, "2 ranks then 3");
}
