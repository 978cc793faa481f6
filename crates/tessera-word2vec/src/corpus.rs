//! Text to training data: tokenization, the vocabulary, frequent-word subsampling and the
//! negative-sampling distribution.

use std::collections::HashMap;
use std::path::Path;
use tessera::util::rng::Rng;
use tessera::{Error, Result};

/// Longest sentence, in vocabulary words, that training sees at once (word2vec's
/// `MAX_SENTENCE_LENGTH`); longer paragraphs are cut into pieces of this length.
pub const MAX_SENTENCE_WORDS: usize = 1000;

/// Whether `c` belongs to a word: a letter or digit (any script), or an apostrophe (`'` or `’`).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '\u{2019}'
}

/// Split text into words: maximal runs of letters, digits and apostrophes, lowercased, with `’`
/// written as `'` and apostrophes at either end removed (`'Tis` → `tis`, `o'er` stays `o'er`).
/// Everything else (spaces, punctuation, `_`, `-`) separates words.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_word(text, |w| out.push(w.to_string()));
    out
}

/// Call `f` on each word of `text` as [`tokenize`] defines them, without allocating per word.
pub fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut buf = String::new();
    let mut flush = |buf: &mut String| {
        let w = buf.trim_matches('\'');
        if !w.is_empty() {
            f(w);
        }
        buf.clear();
    };
    for c in text.chars() {
        if is_word_char(c) {
            if c == '\u{2019}' {
                buf.push('\'');
            } else if c.is_ascii() {
                buf.push(c.to_ascii_lowercase());
            } else {
                buf.extend(c.to_lowercase());
            }
        } else if !buf.is_empty() {
            flush(&mut buf);
        }
    }
    if !buf.is_empty() {
        flush(&mut buf);
    }
}

/// The words kept for training, most frequent first (ties in byte order), with their counts.
#[derive(Clone, Debug)]
pub struct Vocab {
    words: Vec<String>,
    counts: Vec<u64>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words, most frequent first.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Corpus counts, in the order of [`Vocab::words`].
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The index of `word`, if it is in the vocabulary.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// Sum of the counts: the number of corpus words training reads per epoch.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A tokenized corpus: the vocabulary and every in-vocabulary word as an id, cut into sentences.
///
/// A sentence is a paragraph (lines between blank lines; files never share one), cut into pieces
/// of at most [`MAX_SENTENCE_WORDS`]; context windows never cross sentences. Words below
/// `min_count` are dropped before windows are taken, as word2vec does.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub vocab: Vocab,
    /// Word ids, sentence after sentence.
    pub ids: Vec<u32>,
    /// `ids[starts[i]..starts[i + 1]]` is sentence `i` (the last entry is `ids.len()`).
    pub starts: Vec<usize>,
}

impl Corpus {
    /// Read and tokenize UTF-8 text files (errors name the file: missing, not UTF-8, no words).
    pub fn from_files<P: AsRef<Path>>(paths: &[P], min_count: u64) -> Result<Corpus> {
        if paths.is_empty() {
            return Err(Error::Input("no data files given".into()));
        }
        let mut b = Builder::default();
        for p in paths {
            let p = p.as_ref();
            let text = tessera::error::read_text(p)?;
            if b.add_text(&text) == 0 {
                return Err(Error::Input(format!(
                    "{}: no words in the file",
                    p.display()
                )));
            }
        }
        b.finish(min_count)
    }

    /// Tokenize texts held in memory (each text is its own set of paragraphs).
    pub fn from_texts(texts: &[&str], min_count: u64) -> Result<Corpus> {
        let mut b = Builder::default();
        for t in texts {
            b.add_text(t);
        }
        b.finish(min_count)
    }

    /// Number of sentences.
    pub fn sentences(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Sentence `i` as word ids.
    pub fn sentence(&self, i: usize) -> &[u32] {
        &self.ids[self.starts[i]..self.starts[i + 1]]
    }
}

/// Collects provisional ids for every distinct word; `finish` applies `min_count`.
#[derive(Default)]
struct Builder {
    index: HashMap<String, u32>,
    words: Vec<String>,
    counts: Vec<u64>,
    ids: Vec<u32>,
    /// Where each paragraph starts in `ids`.
    starts: Vec<usize>,
}

impl Builder {
    /// Add one text; returns its number of words.
    fn add_text(&mut self, text: &str) -> usize {
        let before = self.ids.len();
        let mut open = false;
        for line in text.lines() {
            if line.trim().is_empty() {
                open = false;
                continue;
            }
            if !open {
                self.starts.push(self.ids.len());
                open = true;
            }
            let Builder {
                index,
                words,
                counts,
                ids,
                ..
            } = self;
            for_each_word(line, |w| {
                let id = match index.get(w) {
                    Some(&id) => id,
                    None => {
                        let id = words.len() as u32;
                        index.insert(w.to_string(), id);
                        words.push(w.to_string());
                        counts.push(0);
                        id
                    }
                };
                counts[id as usize] += 1;
                ids.push(id);
            });
        }
        self.ids.len() - before
    }

    fn finish(self, min_count: u64) -> Result<Corpus> {
        if self.ids.is_empty() {
            return Err(Error::Input("the corpus has no words".into()));
        }
        let min_count = min_count.max(1);
        let mut order: Vec<u32> = (0..self.words.len() as u32)
            .filter(|&i| self.counts[i as usize] >= min_count)
            .collect();
        if order.is_empty() {
            let top = (0..self.words.len())
                .max_by_key(|&i| self.counts[i])
                .unwrap_or(0);
            return Err(Error::Input(format!(
                "no word occurs at least {min_count} times ({} distinct words; the most frequent, \
                 '{}', occurs {} times): lower the minimum count or give more text",
                self.words.len(),
                self.words[top],
                self.counts[top]
            )));
        }
        order.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            self.counts[b]
                .cmp(&self.counts[a])
                .then_with(|| self.words[a].cmp(&self.words[b]))
        });
        // Provisional id → final id, or u32::MAX for dropped words.
        let mut remap = vec![u32::MAX; self.words.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let words: Vec<String> = order
            .iter()
            .map(|&i| self.words[i as usize].clone())
            .collect();
        let counts: Vec<u64> = order.iter().map(|&i| self.counts[i as usize]).collect();
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let mut ids = Vec::with_capacity(self.ids.len());
        let mut starts = Vec::with_capacity(self.starts.len() + 1);
        let mut bounds = self.starts.clone();
        bounds.push(self.ids.len());
        for w in bounds.windows(2) {
            let mut n = 0;
            for &old in &self.ids[w[0]..w[1]] {
                let id = remap[old as usize];
                if id == u32::MAX {
                    continue;
                }
                if n % MAX_SENTENCE_WORDS == 0 {
                    starts.push(ids.len());
                }
                ids.push(id);
                n += 1;
            }
        }
        starts.push(ids.len());
        Ok(Corpus {
            vocab: Vocab {
                words,
                counts,
                index,
            },
            ids,
            starts,
        })
    }
}

/// Probability of keeping each occurrence of each word under frequent-word subsampling with
/// threshold `sample` (word2vec's formula; 1 for every word when `sample` is 0): with `f` the
/// word's share of the corpus, `keep = (sqrt(f / sample) + 1) · sample / f`, capped at 1.
pub fn keep_probabilities(vocab: &Vocab, sample: f64) -> Vec<f32> {
    let total = vocab.total() as f64;
    vocab
        .counts()
        .iter()
        .map(|&c| {
            if sample <= 0.0 {
                return 1.0;
            }
            let threshold = sample * total;
            let c = c as f64;
            (((c / threshold).sqrt() + 1.0) * threshold / c).min(1.0) as f32
        })
        .collect()
}

/// The negative-sampling distribution, `count^0.75` normalized, as an alias table: each draw
/// costs one random number and two lookups, and follows the distribution exactly (word2vec fills
/// a 10⁸-entry array with the same proportions; this holds 2 entries per word).
#[derive(Clone, Debug)]
pub struct NegativeTable {
    /// Probability of keeping column `i` rather than taking `alias[i]`.
    prob: Vec<f32>,
    alias: Vec<u32>,
}

impl NegativeTable {
    /// The table for these counts, raised to `power` (0.75 in word2vec).
    pub fn new(counts: &[u64], power: f64) -> NegativeTable {
        let n = counts.len();
        let weights: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(power)).collect();
        let sum: f64 = weights.iter().sum();
        // Vose's method: scaled weights, columns below 1 topped up from columns above 1.
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / sum).collect();
        let mut prob = vec![1.0f32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as f32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever remains is 1 up to rounding.
        NegativeTable { prob, alias }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.prob.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.prob.is_empty()
    }

    /// Draw a word id.
    #[inline(always)]
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let r = rng.next_u64();
        // High 32 bits pick the column, the low 24 bits the coin.
        let col = ((r >> 32) * self.prob.len() as u64) >> 32;
        let coin = (r & 0xFF_FFFF) as f32 * (1.0 / (1u32 << 24) as f32);
        let col = col as usize;
        if coin < self.prob[col] {
            col as u32
        } else {
            self.alias[col]
        }
    }

    /// The exact probability of drawing each word (for tests and inspection).
    pub fn probabilities(&self) -> Vec<f64> {
        let n = self.prob.len() as f64;
        let mut p = vec![0.0; self.prob.len()];
        for (i, (&keep, &a)) in self.prob.iter().zip(&self.alias).enumerate() {
            p[i] += keep as f64 / n;
            p[a as usize] += (1.0 - keep as f64) / n;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_lowercases_and_keeps_apostrophes() {
        let t = tokenize("'Tis the KING's _own_ o’er-hasty word; 2nd time--\"Yes!\" Élan");
        assert_eq!(
            t,
            [
                "tis", "the", "king's", "own", "o'er", "hasty", "word", "2nd", "time", "yes",
                "élan"
            ]
        );
        assert!(tokenize(" -- ' ... ").is_empty());
    }

    #[test]
    fn vocab_applies_min_count_and_orders_by_frequency() {
        let c = Corpus::from_texts(&["b a c a b a d\n\nb a"], 2).unwrap();
        assert_eq!(c.vocab.words(), ["a", "b"]);
        assert_eq!(c.vocab.counts(), [4, 3]);
        assert_eq!(c.vocab.id("c"), None);
        // Paragraphs are sentences; dropped words vanish before windows are taken.
        assert_eq!(c.sentences(), 2);
        assert_eq!(c.sentence(0), [1, 0, 0, 1, 0]);
        assert_eq!(c.sentence(1), [1, 0]);
        // Ties are broken by the word itself, so the order does not depend on hashing.
        let c = Corpus::from_texts(&["z y x"], 1).unwrap();
        assert_eq!(c.vocab.words(), ["x", "y", "z"]);
    }

    #[test]
    fn long_paragraphs_are_cut() {
        let text = "w ".repeat(2 * MAX_SENTENCE_WORDS + 5);
        let c = Corpus::from_texts(&[&text], 1).unwrap();
        assert_eq!(c.sentences(), 3);
        assert_eq!(c.sentence(2).len(), 5);
    }

    #[test]
    fn min_count_too_high_is_a_clear_error() {
        let e = Corpus::from_texts(&["a a b"], 5).unwrap_err().to_string();
        assert!(e.contains("no word occurs at least 5 times"), "{e}");
        assert!(e.contains("'a', occurs 2 times"), "{e}");
        let e = Corpus::from_texts(&["...  --"], 1).unwrap_err().to_string();
        assert!(e.contains("no words"), "{e}");
    }

    #[test]
    fn subsampling_follows_word2vec_formula() {
        // 1000 words: "a" 900 times, "b" 90, "c" 10.
        let text = format!("{}{}{}", "a ".repeat(900), "b ".repeat(90), "c ".repeat(10));
        let c = Corpus::from_texts(&[&text], 1).unwrap();
        let keep = keep_probabilities(&c.vocab, 1e-3);
        for (i, &n) in [900.0f64, 90.0, 10.0].iter().enumerate() {
            let f = n / 1000.0;
            let want = ((f / 1e-3).sqrt() + 1.0) * 1e-3 / f;
            assert!((keep[i] as f64 - want.min(1.0)).abs() < 1e-6, "{i}");
        }
        // a: (sqrt(900) + 1) / 900 ≈ 0.0344; b: (sqrt(90) + 1) / 90 ≈ 0.1165; c: 0.4162.
        assert!((keep[0] - 0.034_444).abs() < 1e-5);
        assert!(keep[0] < keep[1] && keep[1] < keep[2] && keep[2] < 1.0);
        assert!(keep_probabilities(&c.vocab, 0.0).iter().all(|&p| p == 1.0));
        // Rare words (f below the threshold) are always kept.
        assert_eq!(keep_probabilities(&c.vocab, 0.5), vec![1.0; 3]);
    }

    #[test]
    fn negative_table_follows_unigram_to_the_three_quarters() {
        let counts = [1000u64, 300, 50, 7, 1];
        let t = NegativeTable::new(&counts, 0.75);
        let w: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(0.75)).collect();
        let sum: f64 = w.iter().sum();
        let exact = t.probabilities();
        for i in 0..counts.len() {
            assert!((exact[i] - w[i] / sum).abs() < 1e-6, "{i}: {exact:?}");
        }
        // Empirical frequencies of 1M draws within 4 standard deviations.
        let mut rng = Rng::new(1);
        let n = 1_000_000;
        let mut hist = [0usize; 5];
        for _ in 0..n {
            hist[t.sample(&mut rng) as usize] += 1;
        }
        for i in 0..counts.len() {
            let p = w[i] / sum;
            let got = hist[i] as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() < 4.0 * sd + 1e-9, "{i}: {got} vs {p}");
        }
        let one = NegativeTable::new(&[5], 0.75);
        assert_eq!(one.sample(&mut rng), 0);
    }
}
