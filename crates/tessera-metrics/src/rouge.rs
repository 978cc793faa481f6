//! ROUGE exactly as Google's `rouge-score` 0.1.2 computes it: ROUGE-N, ROUGE-L and ROUGE-Lsum
//! (newline-separated sentences, union LCS), its tokenizer (lowercase, non-alphanumerics to
//! spaces) with the optional Porter stemmer, and `score_multi`'s best-F reference per type.

use serde::Serialize;

use crate::error::{MetricsError, Result};
use crate::ngram::{FxHashMap, NgramTable, Vocab};
use crate::parallel::map_segments;
use crate::porter;

/// One ROUGE variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RougeType {
    /// ROUGE-N (n-gram overlap), n ≥ 1.
    N(usize),
    /// ROUGE-L: longest common subsequence over the whole text.
    L,
    /// ROUGE-Lsum: summary-level union LCS over `\n`-separated sentences.
    Lsum,
}

impl RougeType {
    /// Parses rouge-score's names: `rouge1`, `rouge2`, …, `rougeL`, `rougeLsum`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "rougeL" => Ok(Self::L),
            "rougeLsum" => Ok(Self::Lsum),
            _ => match name
                .strip_prefix("rouge")
                .and_then(|d| d.parse::<usize>().ok())
            {
                Some(n) if n > 0 => Ok(Self::N(n)),
                _ => Err(MetricsError::InvalidOption(format!(
                    "invalid rouge type {name:?} (expected rouge1, rouge2, …, rougeL, rougeLsum)"
                ))),
            },
        }
    }
    /// rouge-score's name.
    pub fn name(self) -> String {
        match self {
            Self::N(n) => format!("rouge{n}"),
            Self::L => "rougeL".into(),
            Self::Lsum => "rougeLsum".into(),
        }
    }
}

/// Precision, recall and F1 (rouge-score's `Score`).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub fmeasure: f64,
}

impl Prf {
    fn new(precision: f64, recall: f64) -> Self {
        Self {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// rouge-score's `scoring.fmeasure`.
pub fn fmeasure(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// ROUGE settings (rouge-score's `RougeScorer(rouge_types, use_stemmer)`).
#[derive(Clone, Debug)]
pub struct Rouge {
    /// Variants to compute, in output order.
    pub types: Vec<RougeType>,
    /// Porter-stem tokens longer than 3 characters.
    pub use_stemmer: bool,
    /// Worker threads for corpus scoring: 1 = calling thread only, 0 = all cores.
    pub threads: usize,
}

impl Default for Rouge {
    /// rouge1, rouge2, rougeL, rougeLsum without stemming.
    fn default() -> Self {
        Self {
            types: vec![
                RougeType::N(1),
                RougeType::N(2),
                RougeType::L,
                RougeType::Lsum,
            ],
            use_stemmer: false,
            threads: 1,
        }
    }
}

/// Per-worker scratch: a vocabulary (token string -> id) and the stems of seen tokens.
#[derive(Default)]
pub struct RougeScratch {
    vocab: Vocab,
    stems: FxHashMap<u32, u32>,
    lower: String,
    table: NgramTable,
    row_a: Vec<u32>,
    row_b: Vec<u32>,
}

impl RougeScratch {
    fn intern(&mut self, tok: &str) -> u32 {
        self.vocab.id(tok)
    }
}

impl Rouge {
    /// rouge-score's default tokenizer, giving token ids (valid within one scratch).
    pub fn token_ids(&self, text: &str, sc: &mut RougeScratch, out: &mut Vec<u32>) {
        out.clear();
        let mut lower = std::mem::take(&mut sc.lower);
        lower.clear();
        if text.is_ascii() {
            lower.push_str(text);
            lower.make_ascii_lowercase();
        } else {
            lower.push_str(&text.to_lowercase());
        }
        // Every byte outside [a-z0-9] (including all bytes of non-ASCII characters) separates.
        for tok in lower
            .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
            .filter(|t| !t.is_empty())
        {
            let id = sc.intern(tok);
            if self.use_stemmer && tok.len() > 3 {
                let sid = match sc.stems.get(&id) {
                    Some(&s) => s,
                    None => {
                        let st = porter::stem(tok);
                        let s = if st.is_empty()
                            || !st
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                        {
                            u32::MAX
                        } else {
                            sc.intern(&st)
                        };
                        sc.stems.insert(id, s);
                        s
                    }
                };
                if sid != u32::MAX {
                    out.push(sid);
                }
            } else {
                out.push(id);
            }
        }
        sc.lower = lower;
    }

    /// Scores one prediction against one target (rouge-score's `score(target, prediction)`),
    /// one [`Prf`] per configured type.
    pub fn score_with(&self, target: &str, prediction: &str, sc: &mut RougeScratch) -> Vec<Prf> {
        let needs_tokens = self.types.iter().any(|t| *t != RougeType::Lsum);
        let (mut t, mut p) = (Vec::new(), Vec::new());
        if needs_tokens {
            self.token_ids(target, sc, &mut t);
            self.token_ids(prediction, sc, &mut p);
        }
        self.types
            .iter()
            .map(|ty| match *ty {
                RougeType::N(n) => score_ngrams(&t, &p, n, &mut sc.table),
                RougeType::L => score_lcs(&t, &p, &mut sc.row_a, &mut sc.row_b),
                RougeType::Lsum => {
                    let ts = self.sentences(target, sc);
                    let ps = self.sentences(prediction, sc);
                    summary_level_lcs(&ts, &ps)
                }
            })
            .collect()
    }

    /// Scores one prediction against one target.
    pub fn score(&self, target: &str, prediction: &str) -> Vec<Prf> {
        self.score_with(target, prediction, &mut RougeScratch::default())
    }

    /// rouge-score's `score_multi`: per type, the target with the highest F1 (first on ties).
    pub fn score_multi_with(
        &self,
        targets: &[&str],
        prediction: &str,
        sc: &mut RougeScratch,
    ) -> Vec<Prf> {
        let all: Vec<Vec<Prf>> = targets
            .iter()
            .map(|t| self.score_with(t, prediction, sc))
            .collect();
        (0..self.types.len())
            .map(|k| {
                let mut best = 0;
                for (i, s) in all.iter().enumerate() {
                    if s[k].fmeasure > all[best][k].fmeasure {
                        best = i;
                    }
                }
                all.get(best).map(|s| s[k]).unwrap_or_default()
            })
            .collect()
    }

    /// Scores against one or several targets (`score` for one, `score_multi` for several).
    pub fn score_refs_with(
        &self,
        targets: &[&str],
        prediction: &str,
        sc: &mut RougeScratch,
    ) -> Vec<Prf> {
        if targets.len() == 1 {
            self.score_with(targets[0], prediction, sc)
        } else {
            self.score_multi_with(targets, prediction, sc)
        }
    }

    fn sentences(&self, text: &str, sc: &mut RougeScratch) -> Vec<Vec<u32>> {
        text.split('\n')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut v = Vec::new();
                self.token_ids(s, sc, &mut v);
                v
            })
            .collect()
    }

    /// Per-segment scores of a corpus: `out[i][k]` is segment `i`, type `k`.
    pub fn corpus_segments(&self, hyps: &[&str], refs: &[Vec<&str>]) -> Result<Vec<Vec<Prf>>> {
        if self.types.is_empty() {
            return Err(MetricsError::InvalidOption("no rouge types given".into()));
        }
        crate::bleu::check_corpus(hyps, refs)?;
        Ok(map_segments(
            hyps.len(),
            self.threads,
            RougeScratch::default,
            |sc, i| self.score_refs_with(&refs[i], hyps[i], sc),
        ))
    }
}

/// Plain mean over segments per type (what most papers report from rouge-score).
pub fn mean_scores(segs: &[Vec<Prf>]) -> Vec<Prf> {
    let k = segs.first().map(|s| s.len()).unwrap_or(0);
    let n = segs.len() as f64;
    (0..k)
        .map(|t| {
            let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
            for s in segs {
                p += s[t].precision;
                r += s[t].recall;
                f += s[t].fmeasure;
            }
            Prf {
                precision: p / n,
                recall: r / n,
                fmeasure: f / n,
            }
        })
        .collect()
}

fn score_ngrams(t: &[u32], p: &[u32], n: usize, table: &mut NgramTable) -> Prf {
    let tc = (t.len() + 1).saturating_sub(n);
    let pc = (p.len() + 1).saturating_sub(n);
    let inter = if tc > 0 && pc > 0 {
        table.build(&[t, p], n);
        table.overlap(n, 1, 0)
    } else {
        0
    };
    Prf::new(
        inter as f64 / pc.max(1) as f64,
        inter as f64 / tc.max(1) as f64,
    )
}

/// Length of the longest common subsequence (one-row dynamic programme).
pub fn lcs_len(a: &[u32], b: &[u32], prev: &mut Vec<u32>, cur: &mut Vec<u32>) -> usize {
    prev.clear();
    prev.resize(b.len() + 1, 0);
    cur.clear();
    cur.resize(b.len() + 1, 0);
    for &x in a {
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(prev, cur);
    }
    prev[b.len()] as usize
}

fn score_lcs(t: &[u32], p: &[u32], a: &mut Vec<u32>, b: &mut Vec<u32>) -> Prf {
    if t.is_empty() || p.is_empty() {
        return Prf::default();
    }
    let l = lcs_len(t, p, a, b) as f64;
    Prf::new(l / p.len() as f64, l / t.len() as f64)
}

/// Indices into `r` of one LCS of `r` and `c`, chosen by rouge-score's backtracking rule.
fn lcs_indices(r: &[u32], c: &[u32]) -> Vec<usize> {
    let cols = c.len() + 1;
    let mut t = vec![0u32; (r.len() + 1) * cols];
    for i in 1..=r.len() {
        for j in 1..=c.len() {
            t[i * cols + j] = if r[i - 1] == c[j - 1] {
                t[(i - 1) * cols + j - 1] + 1
            } else {
                t[(i - 1) * cols + j].max(t[i * cols + j - 1])
            };
        }
    }
    let (mut i, mut j) = (r.len(), c.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i * cols + j - 1] > t[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

fn summary_level_lcs(refs: &[Vec<u32>], cands: &[Vec<u32>]) -> Prf {
    if refs.is_empty() || cands.is_empty() {
        return Prf::default();
    }
    let m: usize = refs.iter().map(|s| s.len()).sum();
    let n: usize = cands.iter().map(|s| s.len()).sum();
    if m == 0 || n == 0 {
        return Prf::default();
    }
    let mut cnt_r: FxHashMap<u32, i64> = FxHashMap::default();
    let mut cnt_c: FxHashMap<u32, i64> = FxHashMap::default();
    for s in refs {
        for &t in s {
            *cnt_r.entry(t).or_default() += 1;
        }
    }
    for s in cands {
        for &t in s {
            *cnt_c.entry(t).or_default() += 1;
        }
    }
    let mut hits = 0usize;
    for r in refs {
        let mut union: Vec<usize> = cands.iter().flat_map(|c| lcs_indices(r, c)).collect();
        union.sort_unstable();
        union.dedup();
        for i in union {
            let tok = r[i];
            let (cc, rc) = (
                cnt_c.get(&tok).copied().unwrap_or(0),
                cnt_r.get(&tok).copied().unwrap_or(0),
            );
            if cc > 0 && rc > 0 {
                hits += 1;
                *cnt_c.entry(tok).or_default() -= 1;
                *cnt_r.entry(tok).or_default() -= 1;
            }
        }
    }
    Prf::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(RougeType::from_name("rouge2").unwrap(), RougeType::N(2));
        assert_eq!(RougeType::from_name("rougeLsum").unwrap(), RougeType::Lsum);
        assert!(RougeType::from_name("rouge0").is_err());
        assert!(RougeType::from_name("bleu").is_err());
    }

    #[test]
    fn lcs_basic() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(lcs_len(&[1, 2, 3, 4], &[2, 4, 3, 4], &mut a, &mut b), 3);
        assert_eq!(lcs_indices(&[1, 2, 3, 4], &[2, 4, 3, 4]), vec![1, 2, 3]);
    }
}
