//! Data-parallel training under Open MPI, as users launch it: `mpirun --oversubscribe -np N
//! tessera train|finetune ...` against the same command in one process. Built with the `mpi`
//! feature (scripts/test.sh installs Open MPI and turns it on). Without it, a process launched
//! as one of several ranks is refused.
//!
//! Bounds (see `crates/tessera/tests/data_parallel.rs` for why weights need AdamW eps = 1e-3):
//! language-model training: every step's loss and gradient norm within 1e-6 relative of one
//! process's, the weights within 1e-6 × max(1, the tensor's largest magnitude); fine-tuning,
//! which keeps AdamW's eps = 1e-8: the first step within 1e-6, later ones within 1e-4.

use std::process::Command;

mod common;
#[cfg(feature = "mpi")]
#[path = "../../tessera/tests/common/runs.rs"]
mod runs;

fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_several_ranks() {
    // The variables Open MPI's mpirun gives each rank.
    let out = tessera()
        .args(["info", "--system"])
        .env("OMPI_COMM_WORLD_RANK", "0")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("built without MPI support"), "{err}");
    assert!(err.contains("--features mpi"), "{err}");
}

#[cfg(feature = "mpi")]
mod mpi {
    use super::*;
    use runs::{close_steps, step_lines as steps};
    use std::path::{Path, PathBuf};
    use std::process::Output;
    use std::time::{Duration, Instant};

    fn mpirun(n: usize, args: &[&str]) -> Command {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &n.to_string()])
            // Each rank picks its threads (ranks × threads ≤ cores).
            .env_remove("RAYON_NUM_THREADS")
            // CI and containers run as root; Open MPI refuses that unless told.
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg(env!("CARGO_BIN_EXE_tessera"))
            .args(args);
        c
    }

    fn run(mut c: Command) -> Output {
        let out = c
            .output()
            .expect("run (is Open MPI installed? scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{:?} failed: {}",
            c,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The same command in one process (`n` = 1) or under mpirun.
    fn launch(n: usize, args: &[&str]) -> Output {
        if n == 1 {
            let mut c = tessera();
            c.args(args);
            run(c)
        } else {
            run(mpirun(n, args))
        }
    }

    fn corpus(dir: &Path) -> String {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/austen-300k.txt");
        let text = std::fs::read_to_string(p).unwrap();
        let f = dir.join("text.txt");
        std::fs::write(&f, &text.as_bytes()[..60_000]).unwrap();
        f.to_string_lossy().into_owned()
    }

    /// configs/tiny.json with `training` fields replaced.
    fn config(dir: &Path, training: serde_json::Value) -> String {
        let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(base).unwrap()).unwrap();
        for (k, x) in training.as_object().unwrap() {
            v["training"][k] = x.clone();
        }
        let f = dir.join("cfg.json");
        std::fs::write(&f, v.to_string()).unwrap();
        f.to_string_lossy().into_owned()
    }

    fn tensors(file: &Path) -> Vec<(String, Vec<f32>)> {
        let mut t: Vec<(String, Vec<f32>)> =
            tessera::weights::safetensors::load_safetensors(file, &tessera::Device::Cpu)
                .unwrap()
                .into_iter()
                .map(|(k, v)| {
                    let v = v.to_dtype(tessera::DType::F32).unwrap();
                    (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                })
                .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    }

    fn close_weights(a: &Path, b: &Path, what: &str) {
        for ((name, x), (_, y)) in tensors(a).iter().zip(tensors(b)) {
            let scale = x.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(diff <= 1e-6 * scale, "{what}: {name} differs by {diff}");
        }
    }

    #[test]
    fn training_on_2_and_3_ranks_equals_one_process() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let text = corpus(d);
        // 8 windows per step: shards of 4+4 and 3+3+2; eps 1e-3 (see the file's comment).
        let cfg = config(
            d,
            serde_json::json!({"eps": 1e-3, "lr": 1e-2, "grad_accum": 2}),
        );
        let train = |n: usize| {
            let out = d.join(format!("run{n}"));
            let o = out.to_str().unwrap();
            let args = [
                "train",
                "--data",
                &text,
                "--config",
                &cfg,
                "--out",
                o,
                "--max-steps",
                "6",
                "--eval-every",
                "3",
                "--no-plot",
            ];
            let res = launch(n, &args);
            (out, res)
        };
        let (one, _) = train(1);
        for n in [2, 3] {
            let (run, res) = train(n);
            close_steps(
                &steps(&one),
                &steps(&run),
                1e-6,
                1e-6,
                &format!("{n} ranks"),
            );
            close_weights(
                &one.join("checkpoint/model.safetensors"),
                &run.join("checkpoint/model.safetensors"),
                &format!("{n} ranks"),
            );
            // Rank 0 alone reported: one summary line.
            let err = String::from_utf8_lossy(&res.stderr);
            assert_eq!(err.matches("finished at step 6/6").count(), 1, "{err}");
            let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
            assert!(m.contains(&format!("\"ranks\":{n}")), "{m}");
            assert!(m.contains("allreduce_seconds"), "{m}");
        }
    }

    /// `tessera finetune TASK` of a tiny BERT from scratch on `data`, in one process and on 3
    /// ranks: the steps agree (first 1e-6, later 1e-4).
    fn encoder_on_3_ranks(task: &str, file: &str, data: &str, mlm_epochs: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let train = d.join(file);
        std::fs::write(&train, data).unwrap();
        let cfg = d.join("bert.json");
        std::fs::write(&cfg, common::TINY_BERT).unwrap();
        let go = |n: usize, tokenizer: &[&str]| {
            let out = d.join(format!("{task}{n}"));
            let mut args = vec![
                "finetune",
                task,
                "--model",
                cfg.to_str().unwrap(),
                "--train",
                train.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--dev-split",
                "0.25",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--dropout",
                "0",
                "--max-len",
                "32",
                "--mlm-epochs",
                mlm_epochs,
            ];
            args.extend(tokenizer);
            launch(n, &args);
            out
        };
        // The WordPiece trainer orders tied pieces differently from one process to the next:
        // the 3-rank run takes the one-process run's tokenizer (within a job, rank 0's is
        // everyone's).
        let one = go(1, &["--vocab-size", "150"]);
        let tok = d.join("tokenizer.json");
        std::fs::copy(one.join("tokenizer.json"), &tok).unwrap();
        let three = go(3, &["--tokenizer", tok.to_str().unwrap()]);
        // With MLM pretraining its steps come first (AdamW eps 1e-8), then the task's.
        let what = format!("{task}, 3 ranks");
        close_steps(&steps(&one), &steps(&three), 1e-6, 1e-4, &what);
        assert!(three.join("model.safetensors").is_file());
    }

    #[test]
    fn finetuning_a_classifier_on_3_ranks_equals_one_process() {
        let (pos, neg) = (["good", "great", "fine"], ["bad", "awful", "poor"]);
        let mut data = String::new();
        for i in 0..48 {
            let (w, l) = if i % 2 == 0 {
                (pos[i % 3], "positive")
            } else {
                (neg[i % 3], "negative")
            };
            let line =
                serde_json::json!({"text": format!("the room was {w} today {i}"), "label": l});
            data.push_str(&format!("{line}\n"));
        }
        encoder_on_3_ranks("classify", "train.jsonl", &data, "1");
    }

    #[test]
    fn finetuning_a_tagger_on_3_ranks_equals_one_process() {
        // Sentences of different lengths with a few entities: shards hold different numbers of
        // labelled tokens, which weight their losses.
        let (names, places) = (["John", "Mary", "Ana"], ["Paris", "Lima", "Rome"]);
        let mut conll = String::new();
        for i in 0..40 {
            conll.push_str(&format!("{}\tB-person\n", names[i % 3]));
            for w in ["went", "to", "the", "old", "town", "of"]
                .iter()
                .take(1 + i % 6)
            {
                conll.push_str(&format!("{w}\tO\n"));
            }
            conll.push_str(&format!("{}\tB-place\n\n", places[(i / 3) % 3]));
        }
        encoder_on_3_ranks("ner", "train.conll", &conll, "0");
    }

    #[test]
    fn lora_fine_tuning_a_chat_model_on_2_ranks_equals_one_process() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let rows = [
            ("The food was great", "positive"),
            ("Terrible service, never again", "negative"),
            ("I loved the view", "positive"),
            ("Cold soup and rude staff", "negative"),
            ("Best pizza in town", "positive"),
            ("The room smelled bad", "negative"),
        ];
        let mut data = String::new();
        for (t, l) in rows.iter().chain(&rows) {
            let m = serde_json::json!({"messages": [
                {"role": "user", "content": format!("Sentiment of: {t}")},
                {"role": "assistant", "content": l}]});
            data.push_str(&format!("{m}\n"));
        }
        let f = d.join("sft.jsonl");
        std::fs::write(&f, data).unwrap();
        let go = |n: usize| {
            let out = d.join(format!("sft{n}"));
            launch(
                n,
                &[
                    "finetune",
                    "chat",
                    "--data",
                    f.to_str().unwrap(),
                    "--dev-fraction",
                    "0.25",
                    "--batch-size",
                    "3",
                    "--max-steps",
                    "2",
                    "--eval-every",
                    "2",
                    "--out",
                    out.to_str().unwrap(),
                ],
            );
            out
        };
        // One process first: it fetches the model once (the ranks then find it cached).
        let (one, two) = (go(1), go(2));
        close_steps(&steps(&one), &steps(&two), 1e-6, 1e-4, "LoRA, 2 ranks");
        assert!(two.join("adapter_model.safetensors").is_file());
    }

    #[test]
    fn translation_training_on_2_ranks_equals_one_process() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let data = d.join("pairs.tsv");
        std::fs::write(&data, common::colour_pairs_tsv()).unwrap();
        // The tiny Marian layout without dropout (with it, each shard draws its own masks).
        let base =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/seq2seq-tiny.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(base).unwrap()).unwrap();
        v["dropout"] = serde_json::json!(0.0);
        let cfg = d.join("seq2seq.json");
        std::fs::write(&cfg, v.to_string()).unwrap();
        let go = |n: usize| {
            let out = d.join(format!("tr{n}"));
            launch(
                n,
                &[
                    "train",
                    "--task",
                    "translation",
                    "--data",
                    data.to_str().unwrap(),
                    "--src",
                    "en",
                    "--tgt",
                    "es",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                    "--max-steps",
                    "4",
                    "--eval-every",
                    "4",
                    "--no-plot",
                ],
            );
            out
        };
        let (one, two) = (go(1), go(2));
        close_steps(
            &steps(&one),
            &steps(&two),
            1e-6,
            1e-4,
            "translation, 2 ranks",
        );
        assert!(two.join("best/model.safetensors").is_file());
        assert!(two.join("checkpoint/model.safetensors").is_file());
    }

    /// Processes whose parent is `pid`.
    fn children(pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
            if ppid == pid {
                out.push(p);
            }
        }
        out
    }

    /// `mpirun` started in the background, its output captured.
    fn start(n: usize, args: &[&str]) -> std::process::Child {
        mpirun(n, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Poll `done` every 50 ms; fail with `what` once `limit` has passed.
    fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !done() {
            assert!(t0.elapsed() < limit, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The step of the run's resumable checkpoint.
    fn checkpoint_step(run: &Path) -> u64 {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("checkpoint/trainer_state.json")).unwrap(),
        )
        .unwrap();
        state["step"].as_u64().unwrap()
    }

    #[test]
    fn a_rank_that_dies_ends_the_job_and_the_checkpoint_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let text = corpus(d);
        let cfg = config(d, serde_json::json!({"checkpoint_every": 5}));
        let run_dir = d.join("run");
        let o = run_dir.to_str().unwrap();
        let mut job = start(
            2,
            &[
                "train",
                "--data",
                &text,
                "--config",
                &cfg,
                "--out",
                o,
                "--max-steps",
                "1000000",
                "--eval-every",
                "0",
                "--no-plot",
            ],
        );
        // Wait for a checkpoint, then kill one rank.
        wait_until(Duration::from_secs(120), "no checkpoint written", || {
            run_dir.join("checkpoint/trainer_state.json").exists()
        });
        let ranks = children(job.id());
        assert_eq!(ranks.len(), 2, "mpirun's children: {ranks:?}");
        let killed = Command::new("kill")
            .args(["-9", &ranks[1].to_string()])
            .status();
        assert!(killed.unwrap().success());
        // The job ends within seconds (no rank left waiting in an all-reduce).
        wait_until(Duration::from_secs(20), "the job hangs", || {
            job.try_wait().unwrap().is_some()
        });
        let out = job.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("exited on signal 9"), "{err}");
        // The last checkpoint is whole: the run resumes (on one process, for 5 more steps).
        let step = checkpoint_step(&run_dir);
        assert!(
            step >= 5 && step.is_multiple_of(5),
            "checkpoint at step {step}"
        );
        let more = (step + 5).to_string();
        let res = launch(
            1,
            &[
                "train",
                "--data",
                &text,
                "--out",
                o,
                "--resume",
                "--max-steps",
                &more,
                "--no-plot",
            ],
        );
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains("resuming"), "{err}");
    }

    #[test]
    fn sigusr1_to_mpirun_stops_every_rank_after_a_step_with_a_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let text = corpus(d);
        let run_dir = d.join("run");
        let job = start(
            2,
            &[
                "train",
                "--data",
                &text,
                "--config",
                "tiny",
                "--out",
                run_dir.to_str().unwrap(),
                "--max-steps",
                "1000000",
                "--no-plot",
            ],
        );
        wait_until(Duration::from_secs(120), "no steps logged", || {
            std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_or(0, |m| m.lines().count())
                >= 3
        });
        let sent = Command::new("kill")
            .args(["-USR1", &job.id().to_string()])
            .status();
        assert!(sent.unwrap().success());
        let out = job.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("interrupted at step"), "{err}");
        // The checkpoint is of the last step logged: every rank stopped after the same step.
        let last = steps(&run_dir).len() as u64;
        assert_eq!(checkpoint_step(&run_dir), last);
    }

    #[test]
    fn the_rank_layout_is_shown_and_single_process_commands_are_refused() {
        let out = run(mpirun(2, &["info", "--system"]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ranks:           2 (MPI"), "{text}");
        // Rank 0 alone prints.
        assert_eq!(text.matches("cpu:").count(), 1, "{text}");
        let threads: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("threads/rank:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no threads/rank line: {text}"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(
            threads * 2 <= cores.max(2),
            "{threads} threads × 2 ranks > {cores} cores"
        );
        let out = mpirun(2, &["tokenize", "--model", "x", "--text", "hi"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("runs as one process"), "{err}");
    }
}
