//! Task input files: texts (one per line, or JSONL with a `text` field), labelled JSONL
//! (`{"text", "label"}`), CoNLL token/tag files and sentence-pair TSV (translation), with the
//! splits and batching they need. Errors name the file and line.

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

/// A dev fraction must lie strictly between 0 and 1.
fn check_fraction(fraction: f64) -> Result<()> {
    if fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "dev fraction must be in (0, 1), got {fraction}"
        )))
    }
}

/// Split `n` items into (train, dev) index lists: a seeded shuffle, the last `fraction` to dev.
pub fn split_dev(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    check_fraction(fraction)?;
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

/// A sentence pair of a parallel corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The pair's reference (the `ref` column, e.g. `Gen.1.1`), or its line number.
    pub reference: String,
    pub src: String,
    pub tgt: String,
}

/// Sentence pairs of a TSV file whose first line names the columns (e.g. `ref<TAB>en<TAB>es`):
/// the `src` and `tgt` columns, and `ref` when there is one. A line with another number of
/// fields than the header is an error naming the line; empty sentences are kept (an empty line
/// translates to an empty line).
pub fn read_pairs(path: &Path, src: &str, tgt: &str) -> Result<Vec<Pair>> {
    let text = crate::error::read_text(path)?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.strip_suffix('\r').unwrap_or(h).split('\t').collect(),
        None => return Err(Error::Input(format!("{}: empty file", path.display()))),
    };
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            err(
                path,
                1,
                format!(
                    "no column '{name}' in the header (columns: {})",
                    header.join(", ")
                ),
            )
        })
    };
    let (si, ti) = (column(src)?, column(tgt)?);
    let ri = header.iter().position(|h| *h == "ref");
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != header.len() {
            return Err(err(
                path,
                i + 1,
                format!(
                    "{} tab-separated fields, the header has {}",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        out.push(Pair {
            reference: ri.map_or_else(|| (i + 1).to_string(), |r| fields[r].to_string()),
            src: fields[si].to_string(),
            tgt: fields[ti].to_string(),
        });
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no sentence pairs",
            path.display()
        )));
    }
    Ok(out)
}

/// The group of a reference: the part before its first `.` (the book of `Gen.1.1`).
pub fn group_of(reference: &str) -> &str {
    reference.split('.').next().unwrap_or(reference)
}

/// Split items into (train, dev) index lists by whole groups (e.g. books of a parallel Bible:
/// neighbouring verses are near-copies of each other, so a random split by verse leaks): the
/// groups in a seeded order, taken into dev until it holds at least `fraction` of the items.
/// Both lists ascending; errors when there are fewer than 2 groups.
pub fn split_dev_by_group(
    groups: &[&str],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    check_fraction(fraction)?;
    let mut names: Vec<&str> = groups.to_vec();
    names.sort_unstable();
    names.dedup();
    if names.len() < 2 {
        return Err(Error::Input(format!(
            "need at least 2 groups to split by group, got {}",
            names.len()
        )));
    }
    Rng::new(seed).shuffle(&mut names);
    let want = (groups.len() as f64 * fraction).ceil() as usize;
    let mut dev_groups = std::collections::HashSet::new();
    let mut taken = 0;
    // Never every group: the last one stays in training.
    for name in &names[..names.len() - 1] {
        if taken >= want {
            break;
        }
        dev_groups.insert(*name);
        taken += groups.iter().filter(|g| *g == name).count();
    }
    let (dev, train): (Vec<usize>, Vec<usize>) =
        (0..groups.len()).partition(|&i| dev_groups.contains(groups[i]));
    Ok((train, dev))
}

/// One epoch's batches of sentence pairs by token count: the pairs in a seeded order, sorted
/// (stably) by source then target length, cut into batches whose padded size (rows × longest
/// source, and rows × longest target) stays within `max_tokens`, the batches then shuffled. A
/// pair longer than `max_tokens` on its own makes a batch of one. Every index appears once.
pub fn token_batches(lens: &[(usize, usize)], max_tokens: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    rng.shuffle(&mut order);
    order.sort_by_key(|&i| lens[i]);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let (mut ms, mut mt) = (0, 0);
    for i in order {
        let (s, t) = lens[i];
        let (ns, nt) = (ms.max(s), mt.max(t));
        let rows = cur.len() + 1;
        if !cur.is_empty() && (rows * ns > max_tokens || rows * nt > max_tokens) {
            batches.push(std::mem::take(&mut cur));
            (ms, mt) = (s, t);
        } else {
            (ms, mt) = (ns, nt);
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    rng.shuffle(&mut batches);
    batches
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

    #[test]
    fn sentence_pairs_from_tsv() {
        let dir = std::env::temp_dir().join(format!("tessera-pairs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pairs.tsv");
        std::fs::write(
            &p,
            "ref\ten\tes\nGen.1.1\tIn the beginning\tEn el principio\r\nGen.1.2\t\tvacía\n",
        )
        .unwrap();
        let pairs = read_pairs(&p, "en", "es").unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].reference, "Gen.1.1");
        assert_eq!(pairs[0].tgt, "En el principio");
        assert_eq!(
            (pairs[1].src.as_str(), pairs[1].tgt.as_str()),
            ("", "vacía")
        );
        // Reversed direction, by name.
        assert_eq!(
            read_pairs(&p, "es", "en").unwrap()[0].src,
            "En el principio"
        );
        let e = read_pairs(&p, "en", "fr").unwrap_err().to_string();
        assert!(
            e.contains("no column 'fr'") && e.contains("ref, en, es"),
            "{e}"
        );
        std::fs::write(&p, "en\tes\na\tb\nc\td\te\n").unwrap();
        let e = read_pairs(&p, "en", "es").unwrap_err().to_string();
        assert!(
            e.contains("pairs.tsv:3:") && e.contains("3 tab-separated fields, the header has 2"),
            "{e}"
        );
        std::fs::write(&p, "en\tes\na\tb\n").unwrap();
        assert_eq!(read_pairs(&p, "en", "es").unwrap()[0].reference, "2");
        std::fs::write(&p, "en\tes\n").unwrap();
        assert!(read_pairs(&p, "en", "es")
            .unwrap_err()
            .to_string()
            .contains("no sentence pairs"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dev_split_keeps_groups_whole() {
        let refs: Vec<String> = ["Gen", "Exo", "Lev", "Num", "Deu", "Mat"]
            .iter()
            .flat_map(|b| (1..=50).map(move |v| format!("{b}.1.{v}")))
            .collect();
        let groups: Vec<&str> = refs.iter().map(|r| group_of(r)).collect();
        assert_eq!(group_of("Gen.1.1"), "Gen");
        let (train, dev) = split_dev_by_group(&groups, 0.2, 7).unwrap();
        assert_eq!(train.len() + dev.len(), refs.len());
        assert!(dev.len() >= 60 && dev.len() <= 100, "{}", dev.len());
        for &d in &dev {
            assert!(
                train.iter().all(|&t| groups[t] != groups[d]),
                "{} on both sides",
                groups[d]
            );
        }
        assert!(dev.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(split_dev_by_group(&groups, 0.2, 7).unwrap().1, dev);
        assert!(split_dev_by_group(&["a", "a"], 0.5, 1).is_err());
        assert!(split_dev_by_group(&groups, 1.0, 1).is_err());
        // A fraction larger than all but one group still leaves training data.
        let (t, d) = split_dev_by_group(&groups, 0.99, 3).unwrap();
        assert!(!t.is_empty() && !d.is_empty());
    }

    #[test]
    fn token_batches_bound_padded_size_and_cover_everything() {
        let mut rng = Rng::new(3);
        let lens: Vec<(usize, usize)> = (0..500)
            .map(|_| (1 + rng.below(60), 1 + rng.below(70)))
            .chain([(300, 5)])
            .collect();
        let batches = token_batches(&lens, 256, &mut Rng::new(1));
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for b in &batches {
            let ms = b.iter().map(|&i| lens[i].0).max().unwrap();
            let mt = b.iter().map(|&i| lens[i].1).max().unwrap();
            assert!(
                b.len() == 1 || (b.len() * ms <= 256 && b.len() * mt <= 256),
                "{b:?}"
            );
        }
        assert!(batches.iter().any(|b| b == &vec![500]));
        // Sorting by length packs: far fewer batches than one pair each.
        assert!(batches.len() < 150, "{}", batches.len());
        assert_eq!(token_batches(&lens, 256, &mut Rng::new(1)), batches);
    }
}
