//! Atomic file and directory writes.

use crate::{Error, Result};
use std::path::Path;

/// Write `bytes` to `path` atomically: a temporary file beside it (unique to this call), fsync,
/// then rename. Concurrent writers of the same path each install a complete file; the last wins.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Flush a directory's entries (new and renamed files) to disk; a no-op where directories cannot
/// be opened (not Unix).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replace directory `dst` by the fully written directory `src` in as few steps as the OS allows:
/// the old one is renamed aside (to a name unique to this call), the new one renamed in, then the
/// old one removed. A crash leaves either the old or the new directory in place (and at worst a
/// stale `.NAME.old-*` beside it).
pub fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dst.exists() {
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A fresh empty directory reserves the unique name; rename onto an empty directory
        // replaces it.
        let old = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?
            .keep();
        std::fs::rename(dst, &old).map_err(|e| Error::io(dst, e))?;
        std::fs::rename(src, dst).map_err(|e| Error::io(dst, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        std::fs::rename(src, dst).map_err(|e| Error::io(dst, e))?;
    }
    sync_dir(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_from_many_threads_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, &[t; 4096]).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|&b| b == got[0]));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary files left");
    }

    #[test]
    fn replace_dir_swaps_whole_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, dst) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("m"),
        );
        for (d, v) in [(&a, "1"), (&b, "2")] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("x"), v).unwrap();
        }
        replace_dir(&a, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("x")).unwrap(), "1");
        replace_dir(&b, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("x")).unwrap(), "2");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the model directory remains");
    }
}
