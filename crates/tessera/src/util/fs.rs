//! Atomic file and directory writes.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: a temporary file beside it, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = temp_sibling(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A hidden temporary path next to `path` (same file system, so rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Replace directory `dst` by the fully written directory `src` in as few steps as the OS allows:
/// the old one is renamed aside, the new one renamed in, then the old one removed. A crash leaves
/// either the old or the new directory in place (and at worst a stale `.old` beside it).
pub fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        let old = dst.with_file_name(format!(
            ".{}.old-{}",
            dst.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        std::fs::rename(dst, &old).map_err(|e| Error::io(dst, e))?;
        std::fs::rename(src, dst).map_err(|e| Error::io(dst, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        std::fs::rename(src, dst).map_err(|e| Error::io(dst, e))?;
    }
    Ok(())
}
