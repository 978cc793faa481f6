//! METEOR exactly as NLTK 3.10's `meteor_score` computes it: exact, Porter-stem and WordNet
//! synonym matching stages (in that order, each on what the previous left unmatched), chunk
//! penalty, alpha 0.9, beta 3, gamma 0.5, best score over references.
//!
//! NLTK quirks kept on purpose: the synonym stage sees the *stemmed* words left over by the stem
//! stage, and matching walks the hypothesis from its last word to its first.

use serde::Serialize;

use crate::error::Result;
use crate::ngram::FxHashMap;
use crate::porter;
use crate::text::py_lower;
use crate::wordnet::WordNet;

/// METEOR parameters; `Default` equals NLTK's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Meteor {
    /// Relative weight of precision and recall (0.9).
    pub alpha: f64,
    /// Shape of the fragmentation penalty (3.0).
    pub beta: f64,
    /// Weight of the fragmentation penalty (0.5).
    pub gamma: f64,
}

impl Default for Meteor {
    fn default() -> Self {
        Self {
            alpha: 0.9,
            beta: 3.0,
            gamma: 0.5,
        }
    }
}

/// A METEOR score.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct MeteorScore {
    /// METEOR, 0–1.
    pub score: f64,
}

type Enum = Vec<(usize, String)>;

/// Matches `(hyp index, ref index)` and what is left unmatched on each side.
type Stage = (Vec<(usize, usize)>, Enum, Enum);

/// NLTK's `_match_enums`: exact matches, hypothesis walked backwards, each taking the last
/// remaining reference position of the same word.
fn match_enums(hyp: Enum, refs: Enum) -> Stage {
    let mut positions: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
    for (j, (_, w)) in refs.iter().enumerate() {
        positions.entry(w.as_str()).or_default().push(j);
    }
    let mut matches = Vec::new();
    let mut hyp_used = vec![false; hyp.len()];
    let mut ref_used = vec![false; refs.len()];
    for i in (0..hyp.len()).rev() {
        if let Some(p) = positions.get_mut(hyp[i].1.as_str()) {
            if let Some(j) = p.pop() {
                hyp_used[i] = true;
                ref_used[j] = true;
                matches.push((hyp[i].0, refs[j].0));
            }
        }
    }
    let hyp = keep_unused(hyp, &hyp_used);
    let refs = keep_unused(refs, &ref_used);
    (matches, hyp, refs)
}

fn keep_unused(v: Enum, used: &[bool]) -> Enum {
    v.into_iter()
        .zip(used)
        .filter(|(_, &u)| !u)
        .map(|(p, _)| p)
        .collect()
}

/// NLTK's `_enum_wordnetsyn_match`.
fn synonym_match(hyp: Enum, refs: Enum, wn: &WordNet) -> Result<Stage> {
    let mut positions: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
    for (j, (_, w)) in refs.iter().enumerate() {
        positions.entry(w.as_str()).or_default().push(j);
    }
    let mut matches = Vec::new();
    let mut hyp_used = vec![false; hyp.len()];
    let mut ref_used = vec![false; refs.len()];
    for i in (0..hyp.len()).rev() {
        let word = hyp[i].1.as_str();
        let syns = wn.synonyms(word)?;
        // The set iterated by NLTK is {lemma names} ∪ {word}; the winner is the one whose last
        // remaining reference position is largest (unique, so the set order does not matter).
        let mut best: Option<(usize, &str)> = None;
        for s in syns.iter().map(|s| s.as_str()).chain(std::iter::once(word)) {
            if let Some(&j) = positions.get(s).and_then(|p| p.last()) {
                if best.is_none_or(|(bj, _)| j > bj) {
                    best = Some((j, s));
                }
            }
        }
        if let Some((j, w)) = best {
            let w = w.to_string();
            if let Some(p) = positions.get_mut(w.as_str()) {
                p.pop();
            }
            hyp_used[i] = true;
            ref_used[j] = true;
            matches.push((hyp[i].0, refs[j].0));
        }
    }
    let hyp = keep_unused(hyp, &hyp_used);
    let refs = keep_unused(refs, &ref_used);
    Ok((matches, hyp, refs))
}

/// NLTK's `_enum_align_words`: the matches of all three stages, sorted by hypothesis position.
pub fn align(hyp: &[String], reference: &[String], wn: &WordNet) -> Result<Vec<(usize, usize)>> {
    let h: Enum = hyp.iter().cloned().enumerate().collect();
    let r: Enum = reference.iter().cloned().enumerate().collect();
    let (exact, h, r) = match_enums(h, r);
    let stem = |v: Enum| -> Enum { v.into_iter().map(|(i, w)| (i, porter::stem(&w))).collect() };
    let (stemmed, h, r) = match_enums(stem(h), stem(r));
    let (syn, _, _) = synonym_match(h, r, wn)?;
    let mut all: Vec<(usize, usize)> = exact.into_iter().chain(stemmed).chain(syn).collect();
    all.sort_by_key(|m| m.0);
    Ok(all)
}

/// NLTK's `_count_chunks`: runs of matches adjacent in both hypothesis and reference.
pub fn count_chunks(matches: &[(usize, usize)]) -> usize {
    let mut chunks = 1;
    for w in matches.windows(2) {
        if !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1) {
            chunks += 1;
        }
    }
    chunks
}

impl Meteor {
    /// NLTK's `single_meteor_score` on pre-tokenized words (lowercased here, as NLTK does).
    pub fn single(&self, reference: &[&str], hypothesis: &[&str], wn: &WordNet) -> Result<f64> {
        let h: Vec<String> = hypothesis.iter().map(|w| py_lower(w)).collect();
        let r: Vec<String> = reference.iter().map(|w| py_lower(w)).collect();
        let matches = align(&h, &r, wn)?;
        let m = matches.len() as f64;
        if matches.is_empty() || h.is_empty() || r.is_empty() {
            return Ok(0.0);
        }
        let precision = m / h.len() as f64;
        let recall = m / r.len() as f64;
        let fmean = (precision * recall) / (self.alpha * precision + (1.0 - self.alpha) * recall);
        let frag = count_chunks(&matches) as f64 / m;
        let penalty = self.gamma * frag.powf(self.beta);
        Ok((1.0 - penalty) * fmean)
    }

    /// NLTK's `meteor_score`: the best single score over the references (0 with none).
    pub fn score(
        &self,
        references: &[Vec<&str>],
        hypothesis: &[&str],
        wn: &WordNet,
    ) -> Result<f64> {
        let mut best: Option<f64> = None;
        for r in references {
            let s = self.single(r, hypothesis, wn)?;
            best = Some(best.map_or(s, |b: f64| if s > b { s } else { b }));
        }
        Ok(best.unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks() {
        assert_eq!(count_chunks(&[(0, 0), (1, 1), (2, 5), (3, 6)]), 2);
        assert_eq!(count_chunks(&[(0, 0)]), 1);
    }
}
