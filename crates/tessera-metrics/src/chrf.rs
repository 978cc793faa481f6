//! chrF and chrF++ exactly as sacreBLEU 2.x computes them (character n-grams up to 6, optional
//! word n-grams, F-beta with beta 2, best reference per segment, effective-order averaging).

use serde::Serialize;

use crate::bleu::{check_corpus, nrefs_str, SACREBLEU_VERSION};
use crate::error::{MetricsError, Result};
use crate::ngram::{KeyBufs, KeyView, NgramTable, Packing, Vocab};
use crate::parallel::map_segments;
use crate::text::{is_py_space, py_lower, py_split};

/// chrF settings; `Default` equals `sacrebleu.metrics.CHRF()`.
#[derive(Clone, Debug)]
pub struct Chrf {
    /// Character n-gram order (6).
    pub char_order: usize,
    /// Word n-gram order (0 for chrF, 2 for chrF++).
    pub word_order: usize,
    /// Recall weight beta (2).
    pub beta: u32,
    /// Case-insensitive.
    pub lowercase: bool,
    /// Keep whitespace inside character n-grams.
    pub whitespace: bool,
    /// chrF++.py-style epsilon smoothing instead of effective order.
    pub eps_smoothing: bool,
    /// Worker threads: 1 = calling thread only, 0 = all cores.
    pub threads: usize,
}

impl Default for Chrf {
    fn default() -> Self {
        Self {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
            threads: 1,
        }
    }
}

/// A chrF result.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChrfScore {
    /// chrF, 0–100.
    pub score: f64,
    /// Metric name as sacreBLEU prints it (`chrF2`, `chrF2++`).
    pub name: String,
}

/// Segment statistics: `[hyp, ref, match]` per order, character orders first.
pub type ChrfStats = Vec<u64>;

const PUNCTS: &[u8] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn is_punct(c: char) -> bool {
    c.is_ascii() && PUNCTS.contains(&(c as u8))
}

/// sacreBLEU's `_remove_punctuation`: splits one leading or trailing ASCII punctuation mark
/// off each word of two or more characters (a trailing one takes precedence).
pub fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut it = w.chars();
        let first = it.next().expect("split gives non-empty words");
        let Some(last) = it.next_back() else {
            out.push(w);
            continue;
        };
        if is_punct(last) {
            let cut = w.len() - last.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else if is_punct(first) {
            let cut = first.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else {
            out.push(w);
        }
    }
    out
}

/// Per-worker scratch buffers (and a word vocabulary shared by the worker's segments).
#[derive(Default)]
pub struct ChrfScratch {
    chars: NgramTable,
    words: NgramTable,
    vocab: Vocab,
    seqs: Vec<Vec<u32>>,
    wseqs: Vec<Vec<u32>>,
    ckeys: KeyBufs,
    wkeys: KeyBufs,
}

/// Order-`n` overlaps (n = 1..=max_n) of sequence 0 with each other sequence: `out[r-1][n-1]`.
fn overlaps(
    keys: &mut KeyBufs,
    table: &mut NgramTable,
    seqs: &[&[u32]],
    pack: Packing,
    limit: u64,
) -> Vec<Vec<u64>> {
    let all = |f: &mut dyn FnMut(usize, usize) -> u64| -> Vec<Vec<u64>> {
        (1..seqs.len())
            .map(|r| (1..=pack.max_n).map(|n| f(n, r)).collect())
            .collect()
    };
    if let Some(v) = keys.with_keys(seqs, pack, limit, |v: &mut dyn KeyView| {
        all(&mut |n, r| v.overlap(n, 0, r))
    }) {
        return v;
    }
    table.build(seqs, pack.max_n);
    all(&mut |n, r| table.overlap(n, 0, r))
}

impl Chrf {
    fn check(&self) -> Result<()> {
        if self.char_order == 0 || self.char_order > 32 || self.word_order > 32 {
            return Err(MetricsError::InvalidOption(format!(
                "chrF orders out of range: char {} (1..=32), word {} (0..=32)",
                self.char_order, self.word_order
            )));
        }
        Ok(())
    }

    fn order(&self) -> usize {
        self.char_order + self.word_order
    }

    /// Metric name as sacreBLEU prints it.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.beta, "+".repeat(self.word_order))
    }

    /// The F-score (0–100) of (summed) statistics, as sacreBLEU's `_compute_f_score`.
    pub fn f_score(&self, stats: &[u64]) -> f64 {
        let eps = 1e-16;
        let factor = (self.beta as f64) * (self.beta as f64);
        let mut score = 0.0;
        let (mut avg_prec, mut avg_rec, mut eff) = (0.0, 0.0, 0usize);
        for i in 0..self.order() {
            let at = |k: usize| stats.get(k).copied().unwrap_or(0);
            let (h, r, m) = (at(3 * i), at(3 * i + 1), at(3 * i + 2));
            let prec = if h > 0 { m as f64 / h as f64 } else { eps };
            let rec = if r > 0 { m as f64 / r as f64 } else { eps };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                eps
            };
            if h > 0 && r > 0 {
                avg_prec += prec;
                avg_rec += rec;
                eff += 1;
            }
        }
        if self.eps_smoothing {
            return 100.0 * score / self.order() as f64;
        }
        if eff == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= eff as f64;
            avg_rec /= eff as f64;
        }
        if avg_prec + avg_rec != 0.0 {
            let mut s = (1.0 + factor) * avg_prec * avg_rec;
            s /= factor * avg_prec + avg_rec;
            100.0 * s
        } else {
            0.0
        }
    }

    fn char_seq(&self, s: &str, out: &mut Vec<u32>) {
        out.clear();
        if self.whitespace {
            out.extend(s.chars().map(|c| c as u32));
        } else {
            out.extend(s.chars().filter(|c| !is_py_space(*c)).map(|c| c as u32));
        }
    }

    /// Statistics of one segment: those of the reference with the best F-score.
    pub fn segment_stats(&self, hyp: &str, refs: &[&str], sc: &mut ChrfScratch) -> ChrfStats {
        if refs.is_empty() {
            return vec![0; 3 * self.order()];
        }
        let nseq = refs.len() + 1;
        let lowered: Vec<String>;
        let texts: Vec<&str> = if self.lowercase {
            lowered = std::iter::once(hyp)
                .chain(refs.iter().copied())
                .map(py_lower)
                .collect();
            lowered.iter().map(|s| s.as_str()).collect()
        } else {
            std::iter::once(hyp).chain(refs.iter().copied()).collect()
        };
        if sc.seqs.len() < nseq {
            sc.seqs.resize_with(nseq, Vec::new);
            sc.wseqs.resize_with(nseq, Vec::new);
        }
        for (k, t) in texts.iter().enumerate() {
            self.char_seq(t, &mut sc.seqs[k]);
        }
        let seqs: Vec<&[u32]> = sc.seqs[..nseq].iter().map(|v| v.as_slice()).collect();
        // Characters take 10 bits when the segment's code points are all below U+03FF.
        let climit = seqs
            .iter()
            .flat_map(|s| s.iter())
            .max()
            .map_or(1, |&c| c as u64 + 1);
        let cbits = if climit < (1 << 10) { 10 } else { 21 };
        let cpack = Packing {
            max_n: self.char_order,
            bits: cbits,
        };
        let cm = overlaps(&mut sc.ckeys, &mut sc.chars, &seqs, cpack, climit);
        let wm = if self.word_order > 0 {
            for (k, t) in texts.iter().enumerate() {
                let vocab = &mut sc.vocab;
                sc.wseqs[k].clear();
                sc.wseqs[k].extend(remove_punctuation(t).into_iter().map(|w| vocab.id(w)));
            }
            let wseqs: Vec<&[u32]> = sc.wseqs[..nseq].iter().map(|v| v.as_slice()).collect();
            let wlimit = sc.vocab.len() as u64 + 1;
            let wpack = Packing {
                max_n: self.word_order,
                bits: if wlimit < (1 << 16) { 16 } else { 32 },
            };
            overlaps(&mut sc.wkeys, &mut sc.words, &wseqs, wpack, wlimit)
        } else {
            Vec::new()
        };
        let mut best: Vec<u64> = Vec::new();
        let mut best_f = -1.0;
        let mut stats = Vec::with_capacity(3 * self.order());
        for r in 1..nseq {
            stats.clear();
            for n in 1..=self.char_order {
                let h = (sc.seqs[0].len() + 1).saturating_sub(n) as u64;
                let rt = (sc.seqs[r].len() + 1).saturating_sub(n) as u64;
                stats.extend_from_slice(&[if rt > 0 { h } else { 0 }, rt, cm[r - 1][n - 1]]);
            }
            for n in 1..=self.word_order {
                let h = (sc.wseqs[0].len() + 1).saturating_sub(n) as u64;
                let rt = (sc.wseqs[r].len() + 1).saturating_sub(n) as u64;
                stats.extend_from_slice(&[if rt > 0 { h } else { 0 }, rt, wm[r - 1][n - 1]]);
            }
            let f = self.f_score(&stats);
            if f > best_f {
                best_f = f;
                best.clone_from(&stats);
            }
        }
        best
    }

    /// Per-segment statistics of a corpus; `refs[i]` are the references of segment `i`.
    pub fn corpus_stats(&self, hyps: &[&str], refs: &[Vec<&str>]) -> Result<Vec<ChrfStats>> {
        self.check()?;
        check_corpus(hyps, refs)?;
        Ok(map_segments(
            hyps.len(),
            self.threads,
            ChrfScratch::default,
            |sc, i| self.segment_stats(hyps[i], &refs[i], sc),
        ))
    }

    /// Corpus chrF: F-score of the summed segment statistics.
    pub fn corpus_score(&self, hyps: &[&str], refs: &[Vec<&str>]) -> Result<ChrfScore> {
        let stats = self.corpus_stats(hyps, refs)?;
        let sum = crate::bleu::sum_stats(&stats);
        Ok(ChrfScore {
            score: self.f_score(&sum),
            name: self.name(),
        })
    }

    /// chrF of one segment (sacreBLEU's `sentence_score`).
    pub fn sentence_score(&self, hyp: &str, refs: &[&str]) -> Result<ChrfScore> {
        self.check()?;
        if refs.is_empty() {
            return Err(MetricsError::NoReference(1));
        }
        let st = self.segment_stats(hyp, refs, &mut ChrfScratch::default());
        Ok(ChrfScore {
            score: self.f_score(&st),
            name: self.name(),
        })
    }

    /// The sacreBLEU signature, e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub fn signature(&self, nrefs: Option<usize>) -> String {
        format!(
            "nrefs:{}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{}",
            nrefs_str(nrefs),
            if self.lowercase { "lc" } else { "mixed" },
            if self.eps_smoothing { "no" } else { "yes" },
            self.char_order,
            self.word_order,
            if self.whitespace { "yes" } else { "no" },
            SACREBLEU_VERSION
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_split() {
        assert_eq!(
            remove_punctuation("(hi) a, .b c"),
            vec!["(hi", ")", "a", ",", ".", "b", "c"]
        );
    }

    #[test]
    fn identical_is_100() {
        let c = Chrf {
            word_order: 2,
            ..Chrf::default()
        };
        let s = c.sentence_score("The cat sat.", &["The cat sat."]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(s.name, "chrF2++");
    }
}
