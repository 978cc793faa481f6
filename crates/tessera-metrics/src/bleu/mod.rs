//! BLEU exactly as sacreBLEU 2.x computes it: corpus and sentence scores, smoothing methods,
//! effective order, several references per segment and the reproducibility signature.

pub mod tokenize;

use serde::Serialize;

pub use tokenize::Tokenizer;

use crate::error::{MetricsError, Result};
use crate::ngram::{KeyBufs, NgramTable, Packing, Vocab};
use crate::parallel::map_segments;
use crate::text::{py_lower, py_rstrip};

/// The sacreBLEU release whose numbers (and signature format) this crate reproduces.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// Highest n-gram order supported (sacreBLEU's default is 4).
pub const MAX_ORDER_LIMIT: usize = 8;

/// BLEU smoothing method (Chen & Cherry 2014), as sacreBLEU names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Smooth {
    /// `exp`: NIST geometric sequence smoothing (default).
    #[default]
    Exp,
    /// `floor`: zero counts replaced by a small value (default 0.1).
    Floor,
    /// `add-k`: k added to counts and totals of orders above 1 (default 1).
    AddK,
    /// `none`: no smoothing.
    None,
}

impl Smooth {
    /// Parses sacreBLEU's name: `exp`, `floor`, `add-k`, `none`.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "exp" => Self::Exp,
            "floor" => Self::Floor,
            "add-k" => Self::AddK,
            "none" => Self::None,
            _ => {
                return Err(MetricsError::InvalidOption(format!(
                    "unknown smoothing {name:?} (expected exp, floor, add-k or none)"
                )))
            }
        })
    }
    /// sacreBLEU's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exp => "exp",
            Self::Floor => "floor",
            Self::AddK => "add-k",
            Self::None => "none",
        }
    }
    /// The default smoothing value, where the method has one.
    pub fn default_value(self) -> Option<f64> {
        match self {
            Self::Floor => Some(0.1),
            Self::AddK => Some(1.0),
            _ => None,
        }
    }
}

/// BLEU settings; `Default` equals `sacrebleu.metrics.BLEU()`.
#[derive(Clone, Debug)]
pub struct Bleu {
    /// Tokenizer applied to hypotheses and references.
    pub tokenizer: Tokenizer,
    /// Lowercase before tokenizing.
    pub lowercase: bool,
    /// Smoothing method.
    pub smooth: Smooth,
    /// Smoothing value for `floor` / `add-k`; `None` takes the method's default.
    pub smooth_value: Option<f64>,
    /// Maximum n-gram order (default 4).
    pub max_order: usize,
    /// Stop at the highest order with any n-grams (what sentence BLEU uses).
    pub effective_order: bool,
    /// Worker threads: 1 = calling thread only, 0 = all cores.
    pub threads: usize,
}

impl Default for Bleu {
    fn default() -> Self {
        Self {
            tokenizer: Tokenizer::Mteval13a,
            lowercase: false,
            smooth: Smooth::Exp,
            smooth_value: None,
            max_order: 4,
            effective_order: false,
            threads: 1,
        }
    }
}

/// A BLEU result with everything sacreBLEU reports.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BleuScore {
    /// BLEU, 0–100.
    pub score: f64,
    /// n-gram precisions in percent, orders 1..=max.
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis length / reference length.
    pub ratio: f64,
    /// Hypothesis tokens.
    pub sys_len: u64,
    /// Closest-reference tokens.
    pub ref_len: u64,
    /// Matched n-grams per order (with `add-k`, as sacreBLEU reports them: plus k above order 1).
    #[serde(serialize_with = "crate::report::ser_nums")]
    pub counts: Vec<f64>,
    /// Hypothesis n-grams per order (with `add-k`, plus k above order 1).
    #[serde(serialize_with = "crate::report::ser_nums")]
    pub totals: Vec<f64>,
}

/// Sufficient statistics of one segment: `[sys_len, ref_len, correct_1..=N, total_1..=N]`.
pub type BleuStats = Vec<u64>;

/// sacreBLEU's floored log: `log(0)` is `-9999999999`.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// Reference length closest to `hyp_len`; ties go to the shorter one.
pub fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None;
    for &r in ref_lens {
        let d = hyp_len.abs_diff(r);
        best = match best {
            None => Some((d, r)),
            Some((bd, br)) if d < bd || (d == bd && r < br) => Some((d, r)),
            b => b,
        };
    }
    best.map(|b| b.1).unwrap_or(0)
}

/// Per-worker scratch buffers (and a vocabulary shared by the worker's segments).
#[derive(Default)]
pub struct BleuScratch {
    table: NgramTable,
    vocab: Vocab,
    ids: Vec<Vec<u32>>,
    keys: KeyBufs,
}

impl Bleu {
    fn check(&self) -> Result<()> {
        if self.max_order == 0 || self.max_order > MAX_ORDER_LIMIT {
            return Err(MetricsError::InvalidOption(format!(
                "max n-gram order must be 1..={MAX_ORDER_LIMIT}, got {}",
                self.max_order
            )));
        }
        Ok(())
    }

    /// Appends the vocabulary ids of the tokens of `s` (lowercased, right-stripped, tokenized).
    fn token_ids(&self, s: &str, vocab: &mut Vocab, ids: &mut Vec<u32>) {
        ids.clear();
        let mut emit = |t: &str| ids.push(vocab.id(t));
        if self.lowercase {
            self.tokenizer
                .for_each_token(py_rstrip(&py_lower(s)), &mut emit);
        } else {
            self.tokenizer.for_each_token(py_rstrip(s), &mut emit);
        }
    }

    /// Statistics of one segment against its references (at least one).
    pub fn segment_stats(&self, hyp: &str, refs: &[&str], sc: &mut BleuScratch) -> BleuStats {
        let nseq = refs.len() + 1;
        if sc.ids.len() < nseq {
            sc.ids.resize_with(nseq, Vec::new);
        }
        for (k, text) in std::iter::once(hyp).chain(refs.iter().copied()).enumerate() {
            self.token_ids(text, &mut sc.vocab, &mut sc.ids[k]);
        }
        let hyp_len = sc.ids[0].len() as u64;
        let ref_lens: Vec<u64> = sc.ids[1..nseq].iter().map(|s| s.len() as u64).collect();
        let n = self.max_order;
        let mut st = vec![0u64; 2 + 2 * n];
        st[0] = hyp_len;
        st[1] = closest_ref_len(hyp_len, &ref_lens);
        for o in 1..=n {
            st[1 + n + o] = (hyp_len + 1).saturating_sub(o as u64);
        }
        let seqs: Vec<&[u32]> = sc.ids[..nseq].iter().map(|v| v.as_slice()).collect();
        // Packed keys: 16 bits per token while the vocabulary is small, else 32; dense-id
        // tables for orders above 4.
        let vocab = sc.vocab.len() as u64 + 1;
        let bits = if vocab < (1 << 16) { 16 } else { 32 };
        let pack = Packing { max_n: n, bits };
        let done = sc.keys.with_keys(&seqs, pack, vocab, |v| {
            for o in 1..=n {
                st[1 + o] = v.clipped(o);
            }
        });
        if done.is_none() {
            sc.table.build(&seqs, n);
            for o in 1..=n {
                st[1 + o] = sc.table.clipped_overlap(o, 0, 1..nseq);
            }
        }
        st
    }

    /// BLEU from (summed) statistics, as sacreBLEU's `compute_bleu`.
    pub fn compute(&self, stats: &[u64]) -> BleuScore {
        let n = self.max_order;
        let mut padded;
        let mut stats = stats;
        if stats.len() < 2 + 2 * n {
            padded = stats.to_vec();
            padded.resize(2 + 2 * n, 0);
            stats = &padded;
        }
        let (sys_len, ref_len) = (stats[0], stats[1]);
        let mut correct: Vec<f64> = stats[2..2 + n].iter().map(|&x| x as f64).collect();
        let mut total: Vec<f64> = stats[2 + n..2 + 2 * n].iter().map(|&x| x as f64).collect();
        let smooth_value = self
            .smooth_value
            .or(self.smooth.default_value())
            .unwrap_or(0.0);
        let mut bp = 1.0;
        if sys_len < ref_len {
            bp = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }
        let ratio = if ref_len > 0 {
            sys_len as f64 / ref_len as f64
        } else {
            0.0
        };
        let mut precisions = vec![0.0; n];
        if correct.iter().all(|&c| c == 0.0) {
            return BleuScore {
                score: 0.0,
                precisions,
                bp,
                ratio,
                sys_len,
                ref_len,
                counts: correct,
                totals: total,
            };
        }
        let mut smooth_mteval = 1.0;
        let mut eff_order = n;
        for k in 1..=n {
            if self.smooth == Smooth::AddK && k > 1 {
                correct[k - 1] += smooth_value;
                total[k - 1] += smooth_value;
            }
            if total[k - 1] == 0.0 {
                break;
            }
            if self.effective_order {
                eff_order = k;
            }
            if correct[k - 1] == 0.0 {
                match self.smooth {
                    Smooth::Exp => {
                        smooth_mteval *= 2.0;
                        precisions[k - 1] = 100.0 / (smooth_mteval * total[k - 1]);
                    }
                    Smooth::Floor => precisions[k - 1] = 100.0 * smooth_value / total[k - 1],
                    _ => {}
                }
            } else {
                precisions[k - 1] = 100.0 * correct[k - 1] / total[k - 1];
            }
        }
        let mut sum = 0.0;
        for p in &precisions[..eff_order] {
            sum += my_log(*p);
        }
        let score = bp * (sum / eff_order as f64).exp();
        BleuScore {
            score,
            precisions,
            bp,
            ratio,
            sys_len,
            ref_len,
            counts: correct,
            totals: total,
        }
    }

    /// Per-segment statistics for a corpus; `refs[i]` are the references of segment `i`.
    pub fn corpus_stats(&self, hyps: &[&str], refs: &[Vec<&str>]) -> Result<Vec<BleuStats>> {
        self.check()?;
        check_corpus(hyps, refs)?;
        Ok(map_segments(
            hyps.len(),
            self.threads,
            BleuScratch::default,
            |sc, i| self.segment_stats(hyps[i], &refs[i], sc),
        ))
    }

    /// Corpus BLEU; `refs[i]` are the references of segment `i` (one or more).
    pub fn corpus_score(&self, hyps: &[&str], refs: &[Vec<&str>]) -> Result<BleuScore> {
        let stats = self.corpus_stats(hyps, refs)?;
        Ok(self.compute(&sum_stats(&stats)))
    }

    /// Sentence BLEU of one hypothesis (sacreBLEU's `sentence_score`; use
    /// `effective_order: true` for what `sacrebleu.sentence_bleu` computes).
    pub fn sentence_score(&self, hyp: &str, refs: &[&str]) -> Result<BleuScore> {
        self.check()?;
        if refs.is_empty() {
            return Err(MetricsError::NoReference(1));
        }
        let st = self.segment_stats(hyp, refs, &mut BleuScratch::default());
        Ok(self.compute(&st))
    }

    /// The sacreBLEU signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    /// `nrefs` is `None` when segments have different numbers of references (`var`).
    pub fn signature(&self, nrefs: Option<usize>) -> String {
        let mut smooth = self.smooth.name().to_string();
        if let Some(d) = self.smooth.default_value() {
            smooth.push_str(&format!("[{:.2}]", self.smooth_value.unwrap_or(d)));
        }
        format!(
            "nrefs:{}|case:{}|eff:{}|tok:{}|smooth:{}|version:{}",
            nrefs_str(nrefs),
            if self.lowercase { "lc" } else { "mixed" },
            if self.effective_order { "yes" } else { "no" },
            self.tokenizer.name(),
            smooth,
            SACREBLEU_VERSION
        )
    }
}

pub(crate) fn nrefs_str(n: Option<usize>) -> String {
    n.map(|k| k.to_string()).unwrap_or_else(|| "var".into())
}

/// The common number of references per segment, or `None` if it varies.
pub fn common_nrefs(refs: &[Vec<&str>]) -> Option<usize> {
    let first = refs.first().map(|r| r.len())?;
    refs.iter().all(|r| r.len() == first).then_some(first)
}

/// Element-wise sum of segment statistics.
pub fn sum_stats(stats: &[BleuStats]) -> Vec<u64> {
    let mut out = vec![0u64; stats.first().map(|s| s.len()).unwrap_or(0)];
    for s in stats {
        for (o, x) in out.iter_mut().zip(s) {
            *o += x;
        }
    }
    out
}

/// Checks a corpus: at least one segment, as many reference sets as hypotheses, each non-empty.
pub(crate) fn check_corpus(hyps: &[&str], refs: &[Vec<&str>]) -> Result<()> {
    if hyps.is_empty() {
        return Err(MetricsError::NoSegments);
    }
    if hyps.len() != refs.len() {
        return Err(MetricsError::LengthMismatch {
            what: "segment count".into(),
            left_name: "hypotheses".into(),
            left: hyps.len(),
            right_name: "reference sets".into(),
            right: refs.len(),
        });
    }
    if let Some(i) = refs.iter().position(|r| r.is_empty()) {
        return Err(MetricsError::NoReference(i + 1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_len_ties_to_shorter() {
        assert_eq!(closest_ref_len(10, &[12, 8]), 8);
        assert_eq!(closest_ref_len(10, &[11, 8]), 11);
        assert_eq!(closest_ref_len(10, &[9, 11]), 9);
    }

    #[test]
    fn signature_format() {
        let b = Bleu::default();
        assert_eq!(
            b.signature(Some(1)),
            "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
        );
        let f = Bleu {
            smooth: Smooth::Floor,
            lowercase: true,
            ..Bleu::default()
        };
        assert!(f
            .signature(None)
            .starts_with("nrefs:var|case:lc|eff:no|tok:13a|smooth:floor[0.10]"));
    }

    #[test]
    fn identical_is_100() {
        let b = Bleu::default();
        let s = b
            .corpus_score(
                &["the cat sat on the mat ."],
                &[vec!["the cat sat on the mat ."]],
            )
            .unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
    }
}
