//! Word vectors: the word2vec text format, nearest words by cosine, analogies.
//!
//! The format is the one word2vec (`-binary 0`), gensim (`save_word2vec_format(binary=False)`)
//! and GloVe-converted files use: a header line `N D` (number of words, dimensions), then one
//! line per word, `word v1 v2 ... vD`, fields separated by spaces.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use tessera::{Error, Result};

/// A word's neighbour: the word and its cosine similarity.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    pub word: String,
    pub score: f32,
}

/// Words and their vectors (row `i` of `data` belongs to `words[i]`).
#[derive(Clone, Debug)]
pub struct WordVectors {
    words: Vec<String>,
    index: HashMap<String, usize>,
    dim: usize,
    /// (N, D) row-major.
    data: Vec<f32>,
    /// (N, D): each row scaled to unit length (zero rows stay zero).
    unit: Vec<f32>,
}

impl WordVectors {
    /// Vectors for `words`, `data` holding one row of `dim` values per word.
    pub fn new(words: Vec<String>, dim: usize, data: Vec<f32>) -> Result<WordVectors> {
        if dim == 0 {
            return Err(Error::Input(
                "word vectors need at least 1 dimension".into(),
            ));
        }
        if data.len() != words.len() * dim {
            return Err(Error::Input(format!(
                "{} words of {dim} dimensions need {} values, got {}",
                words.len(),
                words.len() * dim,
                data.len()
            )));
        }
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(Error::Input(format!(
                    "word {i} ({w:?}) is empty or holds whitespace"
                )));
            }
            if index.insert(w.clone(), i).is_some() {
                return Err(Error::Input(format!("word {w:?} appears twice")));
            }
        }
        let mut unit = data.clone();
        for row in unit.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(WordVectors {
            words,
            index,
            dim,
            data,
            unit,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Dimensions per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The words, in file order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The vector of `word`, if known.
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        let i = *self.index.get(word)?;
        Some(&self.data[i * self.dim..(i + 1) * self.dim])
    }

    /// Index of `word`: the word as given, else lowercased (the trainer lowercases its corpus).
    fn lookup(&self, word: &str) -> Result<usize> {
        if let Some(&i) = self.index.get(word) {
            return Ok(i);
        }
        if let Some(&i) = self.index.get(&word.to_lowercase()) {
            return Ok(i);
        }
        Err(Error::Input(format!(
            "'{word}' is not in the vocabulary ({} words)",
            self.words.len()
        )))
    }

    fn unit_row(&self, i: usize) -> &[f32] {
        &self.unit[i * self.dim..(i + 1) * self.dim]
    }

    /// The `k` words closest to `word` by cosine similarity, best first (the word itself excluded).
    pub fn similar(&self, word: &str, k: usize) -> Result<Vec<Neighbour>> {
        let i = self.lookup(word)?;
        Ok(self.nearest(self.unit_row(i), k, &[i]))
    }

    /// Words `d` completing "`a` is to `b` as `c` is to `d`" (`man king woman` → `queen`): the
    /// nearest by cosine to `unit(b) − unit(a) + unit(c)`, leaving out `a`, `b` and `c`
    /// (the 3CosAdd rule of word2vec's `word-analogy` and gensim's `most_similar`).
    pub fn analogy(&self, a: &str, b: &str, c: &str, k: usize) -> Result<Vec<Neighbour>> {
        let (ia, ib, ic) = (self.lookup(a)?, self.lookup(b)?, self.lookup(c)?);
        let q: Vec<f32> = (0..self.dim)
            .map(|j| self.unit_row(ib)[j] - self.unit_row(ia)[j] + self.unit_row(ic)[j])
            .collect();
        Ok(self.nearest(&q, k, &[ia, ib, ic]))
    }

    /// The `k` words whose vectors have the highest cosine with `query`, except `exclude`.
    pub fn nearest(&self, query: &[f32], k: usize, exclude: &[usize]) -> Vec<Neighbour> {
        let qn = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        let scale = if qn > 0.0 { 1.0 / qn } else { 0.0 };
        let mut scored: Vec<(usize, f32)> = (0..self.words.len())
            .filter(|i| !exclude.contains(i))
            .map(|i| {
                let dot: f32 = self.unit_row(i).iter().zip(query).map(|(a, b)| a * b).sum();
                (i, dot * scale)
            })
            .collect();
        let k = k.min(scored.len());
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < scored.len() && k > 0 {
            scored.select_nth_unstable_by(k - 1, by_score);
        }
        scored.truncate(k);
        scored.sort_by(by_score);
        scored
            .into_iter()
            .map(|(i, score)| Neighbour {
                word: self.words[i].clone(),
                score,
            })
            .collect()
    }

    /// The vectors in word2vec text format.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.words.len() * (self.dim * 11 + 12));
        let _ = writeln!(s, "{} {}", self.words.len(), self.dim);
        for (w, row) in self.words.iter().zip(self.data.chunks_exact(self.dim)) {
            s.push_str(w);
            for &x in row {
                // Shortest text that parses back to the same f32; exponent form for tiny values.
                if x != 0.0 && x.abs() < 1e-4 {
                    let _ = write!(s, " {x:e}");
                } else {
                    let _ = write!(s, " {x}");
                }
            }
            s.push('\n');
        }
        s
    }

    /// Write the vectors in word2vec text format (atomically: a complete file or none).
    pub fn save(&self, path: &Path) -> Result<()> {
        tessera::util::fs::write_atomic(path, self.to_text().as_bytes())
    }

    /// Read a word2vec text-format file; errors name the file and line.
    pub fn load(path: &Path) -> Result<WordVectors> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::Input(format!(
                "{}: not valid UTF-8 (first bad byte at offset {}); only the text format of \
                 word2vec vectors is read, not the binary one",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        Self::parse(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
    }

    /// Parse word2vec text format; errors name the line.
    pub fn parse(text: &str) -> std::result::Result<WordVectors, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or("empty file (expected an 'N D' header line)")?;
        let head: Vec<&str> = header.split_whitespace().collect();
        let parse_count = |s: &str| s.parse::<usize>().ok();
        let (n, dim) = match head[..] {
            [n, d] => match (parse_count(n), parse_count(d)) {
                (Some(n), Some(d)) => (n, d),
                _ => return Err(format!("line 1: header {header:?} is not two counts 'N D'")),
            },
            _ => return Err(format!("line 1: header {header:?} is not two counts 'N D'")),
        };
        if dim == 0 {
            return Err("line 1: the header says 0 dimensions".into());
        }
        if n.checked_mul(dim).is_none_or(|v| v > (1 << 34)) {
            return Err(format!("line 1: {n} words × {dim} dimensions is too large"));
        }
        let mut words = Vec::with_capacity(n.min(1 << 20));
        let mut data = Vec::with_capacity((n * dim).min(1 << 26));
        for (i, line) in lines {
            let lineno = i + 1;
            if words.len() == n {
                return Err(format!(
                    "line {lineno}: more rows than the {n} the header announces"
                ));
            }
            let mut fields = line.split_whitespace();
            let word = fields.next().unwrap_or_default();
            let before = data.len();
            for (j, f) in fields.enumerate() {
                if j == dim {
                    return Err(format!(
                        "line {lineno}: word '{word}' has more than {dim} values"
                    ));
                }
                match f.parse::<f32>() {
                    Ok(x) if x.is_finite() => data.push(x),
                    _ => {
                        let at = format!("line {lineno}: value {} of word '{word}'", j + 1);
                        return Err(format!("{at} is not a finite number: {f:?}"));
                    }
                }
            }
            let got = data.len() - before;
            if got != dim {
                return Err(format!(
                    "line {lineno}: word '{word}' has {got} values, the header says {dim}"
                ));
            }
            words.push(word.to_string());
        }
        if words.len() != n {
            return Err(format!(
                "the header announces {n} words, the file has {}",
                words.len()
            ));
        }
        WordVectors::new(words, dim, data).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WordVectors {
        let words = ["man", "woman", "king", "queen", "apple"]
            .map(String::from)
            .to_vec();
        #[rustfmt::skip]
        let data = vec![
            1.0, 0.0, 0.1,
            1.0, 0.6, 0.1,
            1.0, 0.0, 1.0,
            1.0, 0.6, 1.0,
            -1.0, 0.2, -3.5e-7,
        ];
        WordVectors::new(words, 3, data).unwrap()
    }

    #[test]
    fn text_round_trip_is_exact() {
        let v = small();
        let text = v.to_text();
        assert!(text.starts_with("5 3\nman 1 0 0.1\n"), "{text}");
        let back = WordVectors::parse(&text).unwrap();
        assert_eq!(back.words(), v.words());
        assert_eq!(back.data, v.data);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.txt");
        v.save(&p).unwrap();
        assert_eq!(WordVectors::load(&p).unwrap().data, v.data);
        // Tabs, trailing spaces (word2vec's own writer) and CRLF are read too.
        let w = WordVectors::parse("2 2\r\na\t1 2 \r\nb 3 4 \r\n").unwrap();
        assert_eq!(w.get("b").unwrap(), &[3.0, 4.0]);
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            ("", "empty file"),
            ("2\n", "line 1: header"),
            ("x 3\n", "line 1: header"),
            ("1 0\n", "0 dimensions"),
            (
                "2 2\na 1 2\nb 1\n",
                "line 3: word 'b' has 1 values, the header says 2",
            ),
            ("1 2\na 1 2 3\n", "line 2: word 'a' has more than 2 values"),
            (
                "1 2\na 1 oops\n",
                "line 2: value 2 of word 'a' is not a finite number",
            ),
            ("1 2\na 1 NaN\n", "line 2: value 2"),
            ("1 2\na 1 2\nb 3 4\n", "line 3: more rows than the 1"),
            ("3 2\na 1 2\nb 3 4\n", "announces 3 words, the file has 2"),
            ("2 1\na 1\na 2\n", "appears twice"),
            ("99999999999 99999999\n", "too large"),
        ];
        for (text, want) in cases {
            let e = WordVectors::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.bin");
        std::fs::write(&p, b"1 2\na \xff\xfe\x00\x01\x02\x03\x04\x05\n").unwrap();
        let e = WordVectors::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("not valid UTF-8") && e.contains("bin.bin"),
            "{e}"
        );
        let e = WordVectors::load(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn similar_and_analogy() {
        let v = small();
        let s = v.similar("man", 2).unwrap();
        assert_eq!(s[0].word, "woman");
        assert!(s[0].score > s[1].score);
        assert_eq!(v.similar("MAN", 10).unwrap().len(), 4);
        let a = v.analogy("man", "king", "woman", 1).unwrap();
        assert_eq!(a[0].word, "queen");
        let e = v.similar("dragon", 3).unwrap_err().to_string();
        assert!(
            e.contains("'dragon' is not in the vocabulary (5 words)"),
            "{e}"
        );
        assert!(v.analogy("man", "king", "dragon", 3).is_err());
        assert!(v.similar("man", 0).unwrap().is_empty());
    }
}
