//! Entity-level precision, recall and F1 for tag sequences (BIO / IOB2 / IOBES) with seqeval
//! 1.2's default (conlleval-compatible) chunking rules, plus reading CoNLL-style files.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::classify::{average, div0, ClassScores};
use crate::error::{MetricsError, Result};

/// Gold and predicted spans of one entity type.
type Spans = (BTreeSet<(usize, usize)>, BTreeSet<(usize, usize)>);

/// One entity: type and inclusive token span (offsets over the concatenated sentences).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entity {
    /// Entity type (`PER`, `geo-loc`, …; `_` when a tag has none).
    pub kind: String,
    /// First token.
    pub start: usize,
    /// Last token.
    pub end: usize,
}

/// seqeval's split of a tag (non-suffix style): the first character is the chunk tag, the
/// type is what follows the first `-` after it (or `_`).
fn split_tag(chunk: &str) -> (char, String) {
    let mut chars = chunk.chars();
    let tag = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let kind = match rest.split_once('-') {
        Some((_, t)) => t,
        None => rest,
    };
    (
        tag,
        if kind.is_empty() {
            "_".into()
        } else {
            kind.into()
        },
    )
}

fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (prev_tag == 'B' && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag == 'I' && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != kind)
}

fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (prev_tag == 'E' && matches!(tag, 'E' | 'I'))
        || (prev_tag == 'S' && matches!(tag, 'E' | 'I'))
        || (prev_tag == 'O' && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

/// seqeval's `get_entities` over sentences (joined with an `O` after each, as seqeval does).
pub fn get_entities(sentences: &[Vec<String>]) -> Vec<Entity> {
    let mut seq: Vec<&str> = Vec::new();
    for s in sentences {
        seq.extend(s.iter().map(|t| t.as_str()));
        seq.push("O");
    }
    seq.push("O");
    let (mut prev_tag, mut prev_type) = ('O', String::new());
    let mut begin = 0;
    let mut out = Vec::new();
    for (i, chunk) in seq.iter().enumerate() {
        let (tag, kind) = split_tag(chunk);
        if end_of_chunk(prev_tag, tag, &prev_type, &kind) {
            out.push(Entity {
                kind: prev_type.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if start_of_chunk(prev_tag, tag, &prev_type, &kind) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = kind;
    }
    out
}

/// Entity-level report (seqeval's `classification_report` numbers) and token accuracy.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NerReport {
    /// Per entity type, sorted by type.
    pub per_type: BTreeMap<String, ClassScores>,
    /// Global counts.
    pub micro: ClassScores,
    /// Unweighted mean over types.
    pub macro_avg: ClassScores,
    /// Mean weighted by the number of gold entities.
    pub weighted: ClassScores,
    /// Fraction of tokens whose tag equals the gold tag (seqeval's `accuracy_score`).
    pub accuracy: f64,
}

fn seq_scores(tp: u64, pred: u64, gold: u64) -> ClassScores {
    let p = div0(tp as f64, pred as f64);
    let r = div0(tp as f64, gold as f64);
    let d = p + r;
    ClassScores {
        precision: p,
        recall: r,
        f1: if d == 0.0 { 0.0 } else { 2.0 * p * r / d },
        support: gold,
    }
}

/// Scores predicted tag sentences against gold ones (same sentence and token counts).
pub fn ner_report(gold: &[Vec<String>], pred: &[Vec<String>]) -> Result<NerReport> {
    if gold.len() != pred.len() {
        return Err(MetricsError::LengthMismatch {
            what: "sentence count".into(),
            left_name: "predictions".into(),
            left: pred.len(),
            right_name: "gold".into(),
            right: gold.len(),
        });
    }
    if gold.is_empty() {
        return Err(MetricsError::NoSegments);
    }
    for (i, (g, p)) in gold.iter().zip(pred).enumerate() {
        if g.len() != p.len() {
            return Err(MetricsError::LengthMismatch {
                what: format!("token count of sentence {}", i + 1),
                left_name: "predictions".into(),
                left: p.len(),
                right_name: "gold".into(),
                right: g.len(),
            });
        }
    }
    let mut by_type: BTreeMap<String, Spans> = BTreeMap::new();
    for e in get_entities(gold) {
        by_type
            .entry(e.kind)
            .or_default()
            .0
            .insert((e.start, e.end));
    }
    for e in get_entities(pred) {
        by_type
            .entry(e.kind)
            .or_default()
            .1
            .insert((e.start, e.end));
    }
    let mut per_type = BTreeMap::new();
    let (mut tp_all, mut pred_all, mut gold_all) = (0u64, 0u64, 0u64);
    for (k, (g, p)) in &by_type {
        let tp = g.intersection(p).count() as u64;
        let (np, ng) = (p.len() as u64, g.len() as u64);
        tp_all += tp;
        pred_all += np;
        gold_all += ng;
        per_type.insert(k.clone(), seq_scores(tp, np, ng));
    }
    let rows: Vec<ClassScores> = per_type.values().cloned().collect();
    let weighted = if gold_all == 0 {
        // seqeval's special case: no gold entities at all gives zeros (zero_division 'warn').
        ClassScores {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0,
        }
    } else {
        average(&rows, true)
    };
    let macro_avg = if rows.is_empty() {
        ClassScores {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0,
        }
    } else {
        average(&rows, false)
    };
    let (mut right, mut total) = (0u64, 0u64);
    for (g, p) in gold.iter().zip(pred) {
        for (a, b) in g.iter().zip(p) {
            right += (a == b) as u64;
            total += 1;
        }
    }
    Ok(NerReport {
        per_type,
        micro: seq_scores(tp_all, pred_all, gold_all),
        macro_avg,
        weighted,
        accuracy: div0(right as f64, total as f64),
    })
}

/// One CoNLL sentence: tokens and tags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConllSentence {
    /// First column.
    pub tokens: Vec<String>,
    /// Last column.
    pub tags: Vec<String>,
}

/// Reads CoNLL-style text: one token per line, fields separated by tabs or spaces, the tag in
/// the last field; blank lines separate sentences; `-DOCSTART-` lines are skipped.
pub fn parse_conll(text: &str, name: &str) -> Result<Vec<ConllSentence>> {
    let mut out = Vec::new();
    let mut cur = ConllSentence::default();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !cur.tokens.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with("-DOCSTART-") {
            continue;
        }
        let fields: Vec<&str> = line.split(['\t', ' ']).filter(|f| !f.is_empty()).collect();
        if fields.len() < 2 {
            return Err(MetricsError::Parse {
                path: name.into(),
                line: ln + 1,
                msg: format!("expected `token<TAB>tag`, got {line:?}"),
            });
        }
        cur.tokens.push(fields[0].to_string());
        cur.tags.push(fields[fields.len() - 1].to_string());
    }
    if !cur.tokens.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn seqeval_doc_example() {
        let gold = vec![
            s(&["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"]),
            s(&["B-PER", "I-PER", "O"]),
        ];
        let pred = vec![
            s(&["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"]),
            s(&["B-PER", "I-PER", "O"]),
        ];
        let r = ner_report(&gold, &pred).unwrap();
        assert_eq!(r.micro.f1, 0.5);
        assert_eq!(r.macro_avg.f1, 0.5);
        assert_eq!(r.per_type["PER"].f1, 1.0);
        assert_eq!(r.per_type["MISC"].f1, 0.0);
    }

    #[test]
    fn entities_rules() {
        let e = get_entities(&[s(&[
            "I-PER",
            "I-PER",
            "B-LOC",
            "E-LOC",
            "S-ORG",
            "O",
            "I-geo-loc",
        ])]);
        let got: Vec<(&str, usize, usize)> = e
            .iter()
            .map(|e| (e.kind.as_str(), e.start, e.end))
            .collect();
        assert_eq!(
            got,
            vec![
                ("PER", 0, 1),
                ("LOC", 2, 3),
                ("ORG", 4, 4),
                ("geo-loc", 6, 6)
            ]
        );
    }

    #[test]
    fn conll_parsing() {
        let c = parse_conll("a\tB-X\nb\tO\n\n-DOCSTART- O\nc O\n", "t").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].tags, vec!["O"]);
        assert!(parse_conll("lonely\n", "t").is_err());
    }
}
