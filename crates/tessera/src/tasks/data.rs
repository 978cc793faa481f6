//! Task input files: texts (one per line, or JSONL with a `text` field), labelled JSONL
//! (`{"text", "label"}`) and CoNLL token/tag files. Errors name the file and line.

use crate::util::rng::Rng;
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// A labelled text.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    pub text: String,
    pub label: String,
}

/// A sentence of words with one BIO tag each.
#[derive(Clone, Debug, PartialEq)]
pub struct Tagged {
    pub words: Vec<String>,
    pub tags: Vec<String>,
}

fn err(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}:{line}: {msg}", path.display()))
}

/// Whether a file's first non-blank line is a JSON object (then the file is read as JSONL).
fn is_jsonl(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with('{'))
}

fn parse_object(path: &Path, no: usize, line: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(err(path, no, "expected a JSON object")),
        Err(e) => Err(err(path, no, format!("malformed JSON: {e}"))),
    }
}

fn string_field(
    path: &Path,
    no: usize,
    o: &serde_json::Map<String, Value>,
    k: &str,
) -> Result<String> {
    match o.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if k == "label" => Ok(n.to_string()),
        Some(Value::Bool(b)) if k == "label" => Ok(b.to_string()),
        Some(v) => Err(err(path, no, format!("'{k}' must be a string, got {v}"))),
        None => Err(err(path, no, format!("missing '{k}'"))),
    }
}

/// Texts of a file: JSONL with a `text` field, or one text per line. Blank lines are errors
/// (each input line is one output line); a final newline is fine.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let text = crate::error::read_text(path)?;
    let jsonl = is_jsonl(&text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Err(err(path, i + 1, "empty line (one text per line expected)"));
        }
        if jsonl {
            let o = parse_object(path, i + 1, line)?;
            out.push(string_field(path, i + 1, &o, "text")?);
        } else {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no texts", path.display())));
    }
    Ok(out)
}

/// Labelled examples of a JSONL file `{"text": ..., "label": ...}` (blank lines are errors).
pub fn read_labelled(path: &Path) -> Result<Vec<Labelled>> {
    let text = crate::error::read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            return Err(err(path, i + 1, "empty line"));
        }
        let o = parse_object(path, i + 1, line)?;
        let label = string_field(path, i + 1, &o, "label")?;
        if label.is_empty() {
            return Err(err(path, i + 1, "empty label"));
        }
        out.push(Labelled {
            text: string_field(path, i + 1, &o, "text")?,
            label,
        });
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

/// Sentences of a CoNLL file: `word<TAB>tag` (or whitespace-separated, tag last) per line, a
/// blank line between sentences.
pub fn read_conll(path: &Path) -> Result<Vec<Tagged>> {
    let text = crate::error::read_text(path)?;
    let mut out = Vec::new();
    let mut cur = Tagged {
        words: Vec::new(),
        tags: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !cur.words.is_empty() {
                out.push(std::mem::replace(
                    &mut cur,
                    Tagged {
                        words: Vec::new(),
                        tags: Vec::new(),
                    },
                ));
            }
            continue;
        }
        let (word, tag) = match line.rsplit_once('\t') {
            Some((w, t)) => (w.trim(), t.trim()),
            None => match line.trim().rsplit_once(char::is_whitespace) {
                Some((w, t)) => (w.trim(), t.trim()),
                None => return Err(err(path, i + 1, "expected 'word<TAB>tag'")),
            },
        };
        if word.is_empty() || tag.is_empty() {
            return Err(err(path, i + 1, "expected 'word<TAB>tag'"));
        }
        if tag != "O" && !(tag.len() > 2 && matches!(&tag[..2], "B-" | "I-")) {
            return Err(err(
                path,
                i + 1,
                format!("tag '{tag}' is not BIO (O, B-TYPE or I-TYPE)"),
            ));
        }
        cur.words.push(word.to_string());
        cur.tags.push(tag.to_string());
    }
    if !cur.words.is_empty() {
        out.push(cur);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no sentences", path.display())));
    }
    Ok(out)
}

/// Split `n` items into (train, dev) index lists: a seeded shuffle, the last `fraction` to dev.
pub fn split_dev(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&fraction) || fraction == 0.0 {
        return Err(Error::Input(format!(
            "dev fraction must be in (0, 1), got {fraction}"
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut idx);
    let n_dev = ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1));
    if n < 2 {
        return Err(Error::Input(
            "need at least 2 examples to make a dev split".into(),
        ));
    }
    let dev = idx.split_off(n - n_dev);
    Ok((idx, dev))
}

/// The sorted label set of `labels`.
pub fn label_set<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = labels.map(str::to_string).collect();
    v.sort();
    v.dedup();
    v
}

/// Check that every label in `dev` is known from training.
pub fn check_known(known: &[String], dev: &[&str], what: &str) -> Result<()> {
    for l in dev {
        if known.binary_search_by(|k| k.as_str().cmp(l)).is_err() {
            return Err(Error::Input(format!(
                "{what}: label '{l}' does not occur in the training data (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn texts_plain_jsonl_and_errors() {
        assert_eq!(
            read_texts(file(b"a b\nc\n").path()).unwrap(),
            vec!["a b", "c"]
        );
        let j = file(b"{\"text\": \"x\"}\n{\"text\": \"y\", \"id\": 3}\n");
        assert_eq!(read_texts(j.path()).unwrap(), vec!["x", "y"]);
        let e = read_texts(file(b"a\n\nb\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: empty line"), "{e}");
        let e = read_texts(file(b"{\"text\": \"x\"}\n{\"text\": 1\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: malformed JSON"), "{e}");
        let e = read_texts(file(b"ok\n\xff\xfe\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn labelled_and_conll_errors() {
        let e = read_labelled(file(b"{\"text\": \"x\"}\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(":1: missing 'label'"), "{e}");
        let c = read_conll(file(b"RT\tO\nBob\tB-person\n\nx\tO\n").path()).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].tags, vec!["O", "B-person"]);
        let e = read_conll(file(b"RT\tO\nBob\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:"), "{e}");
        let e = read_conll(file(b"RT\tX-foo\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not BIO"), "{e}");
        let known = label_set(["a", "b"].into_iter());
        assert!(check_known(&known, &["c"], "dev").is_err());
        let (tr, dv) = split_dev(10, 0.2, 1).unwrap();
        assert_eq!((tr.len(), dv.len()), (8, 2));
    }
}
