//! Reading the inputs of `tessera eval`: line-aligned text files (one segment per line) with
//! clear errors for unreadable files, invalid UTF-8, empty files and unequal line counts.

use std::path::Path;

use crate::error::{MetricsError, Result};

/// Decodes file bytes as UTF-8, naming the line and offset of the first bad byte.
pub fn decode(bytes: Vec<u8>, path: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..off].iter().filter(|&&b| b == b'\n').count() + 1;
        MetricsError::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
            offset: off,
        }
    })
}

/// Reads a whole UTF-8 file; an empty file is an error.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|err| MetricsError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    if bytes.is_empty() {
        return Err(MetricsError::EmptyFile(path.to_path_buf()));
    }
    decode(bytes, path)
}

/// Splits text into lines: `\n` separates, a final `\n` does not start a new line, and a
/// `\r` before `\n` is dropped.
pub fn split_lines(text: &str) -> Vec<&str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// A file read as lines (owned text, borrowed lines).
pub struct LineFile {
    /// Where it came from.
    pub path: std::path::PathBuf,
    text: String,
}

impl LineFile {
    /// Reads `path` (UTF-8, not empty).
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            text: read_text(path)?,
        })
    }
    /// Wraps in-memory text (for tests and library callers).
    pub fn from_text(name: &str, text: String) -> Result<Self> {
        if text.is_empty() {
            return Err(MetricsError::EmptyFile(name.into()));
        }
        Ok(Self {
            path: name.into(),
            text,
        })
    }
    /// The lines.
    pub fn lines(&self) -> Vec<&str> {
        split_lines(&self.text)
    }
}

/// Checks that `other` has as many lines as the hypotheses.
pub fn check_same_len(hyp: &LineFile, n_hyp: usize, other: &LineFile, n: usize) -> Result<()> {
    if n_hyp != n {
        return Err(MetricsError::LengthMismatch {
            what: "line count".into(),
            left_name: hyp.path.display().to_string(),
            left: n_hyp,
            right_name: other.path.display().to_string(),
            right: n,
        });
    }
    Ok(())
}

/// Per-segment references from reference streams: an empty line means "no reference in this
/// stream for this segment" (sacreBLEU's variable reference counts). Every segment needs one.
pub fn references_per_segment<'a>(streams: &[Vec<&'a str>]) -> Result<Vec<Vec<&'a str>>> {
    let n = streams.first().map(|s| s.len()).unwrap_or(0);
    let mut out = vec![Vec::new(); n];
    for s in streams {
        for (i, line) in s.iter().enumerate() {
            if !line.is_empty() {
                out[i].push(*line);
            }
        }
    }
    if let Some(i) = out.iter().position(|r| r.is_empty()) {
        return Err(MetricsError::NoReference(i + 1));
    }
    Ok(out)
}

/// Reads a hypothesis file and reference files, checks line counts, and returns them.
pub struct Corpus {
    /// Hypothesis file.
    pub hyp: LineFile,
    /// Reference files (streams).
    pub refs: Vec<LineFile>,
}

impl Corpus {
    /// Reads all files; at least one reference file.
    pub fn read(hyp: &Path, refs: &[impl AsRef<Path>]) -> Result<Self> {
        if refs.is_empty() {
            return Err(MetricsError::InvalidOption(
                "at least one --ref file is needed".into(),
            ));
        }
        let hyp = LineFile::read(hyp)?;
        let refs = refs
            .iter()
            .map(|r| LineFile::read(r.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { hyp, refs })
    }

    /// Hypothesis lines and per-segment references, after all checks.
    pub fn segments(&self) -> Result<(Vec<&str>, Vec<Vec<&str>>)> {
        let hyps = self.hyp.lines();
        let mut streams = Vec::with_capacity(self.refs.len());
        for r in &self.refs {
            let lines = r.lines();
            check_same_len(&self.hyp, hyps.len(), r, lines.len())?;
            streams.push(lines);
        }
        let refs = references_per_segment(&streams)?;
        Ok((hyps, refs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_crlf() {
        assert_eq!(split_lines("a\r\nb\n"), vec!["a", "b"]);
        assert_eq!(split_lines("a\n\nb"), vec!["a", "", "b"]);
        assert_eq!(split_lines("\n"), vec![""]);
    }

    #[test]
    fn bad_utf8_names_line() {
        let e = decode(b"ok\nbad \xff\n".to_vec(), Path::new("x.txt")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.txt: invalid UTF-8 at line 2 (byte offset 7)"
        );
    }

    #[test]
    fn variable_refs() {
        let s1 = vec!["a", ""];
        let s2 = vec!["b", "c"];
        let r = references_per_segment(&[s1, s2]).unwrap();
        assert_eq!(r, vec![vec!["a", "b"], vec!["c"]]);
        assert!(references_per_segment(&[vec!["", "x"]]).is_err());
    }
}
