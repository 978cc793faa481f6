//! Classification metrics with scikit-learn's definitions: accuracy, per-class precision,
//! recall, F1 and support, micro / macro / weighted averages, and the confusion matrix.
//! Undefined ratios (no predictions, no gold items) are 0, as scikit-learn's default.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{MetricsError, Result};

/// Scores of one class or one average.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassScores {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Number of gold items (of this class, or all for averages).
    pub support: u64,
}

/// A full classification report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassificationReport {
    /// Fraction of items whose prediction equals the gold label.
    pub accuracy: f64,
    /// Labels, sorted (gold ∪ predicted).
    pub labels: Vec<String>,
    /// Per label, in `labels` order.
    pub per_class: BTreeMap<String, ClassScores>,
    /// Global counts (equals accuracy for single-label data).
    pub micro: ClassScores,
    /// Unweighted mean over labels.
    pub macro_avg: ClassScores,
    /// Mean weighted by support.
    pub weighted: ClassScores,
    /// `confusion[i][j]`: items with gold `labels[i]` predicted as `labels[j]`.
    pub confusion: Vec<Vec<u64>>,
}

pub(crate) fn div0(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Per-label counts `(tp, predicted, gold)` to scores, with scikit-learn's F1
/// `2·tp / (gold + predicted)`.
fn sk_scores(tp: u64, pred: u64, gold: u64) -> ClassScores {
    ClassScores {
        precision: div0(tp as f64, pred as f64),
        recall: div0(tp as f64, gold as f64),
        f1: div0(2.0 * tp as f64, (gold + pred) as f64),
        support: gold,
    }
}

/// Macro (weights `None`) or weighted average of per-label scores, as `np.average`.
pub(crate) fn average(rows: &[ClassScores], weighted: bool) -> ClassScores {
    let w: Vec<f64> = rows
        .iter()
        .map(|r| if weighted { r.support as f64 } else { 1.0 })
        .collect();
    let wsum: f64 = w.iter().sum();
    let avg = |f: &dyn Fn(&ClassScores) -> f64| -> f64 {
        let s: f64 = rows.iter().zip(&w).map(|(r, w)| f(r) * w).sum();
        div0(s, wsum)
    };
    ClassScores {
        precision: avg(&|r| r.precision),
        recall: avg(&|r| r.recall),
        f1: avg(&|r| r.f1),
        support: rows.iter().map(|r| r.support).sum(),
    }
}

/// Computes the report for aligned gold and predicted labels.
pub fn classification_report(gold: &[&str], pred: &[&str]) -> Result<ClassificationReport> {
    if gold.len() != pred.len() {
        return Err(MetricsError::LengthMismatch {
            what: "label count".into(),
            left_name: "predictions".into(),
            left: pred.len(),
            right_name: "gold labels".into(),
            right: gold.len(),
        });
    }
    if gold.is_empty() {
        return Err(MetricsError::NoSegments);
    }
    let mut labels: Vec<String> = gold.iter().chain(pred).map(|s| s.to_string()).collect();
    labels.sort();
    labels.dedup();
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (g, p) in gold.iter().zip(pred) {
        confusion[index[g]][index[p]] += 1;
    }
    let mut rows = Vec::with_capacity(k);
    let (mut tp_all, mut n) = (0u64, 0u64);
    for i in 0..k {
        let tp = confusion[i][i];
        let gold_i: u64 = confusion[i].iter().sum();
        let pred_i: u64 = confusion.iter().map(|r| r[i]).sum();
        tp_all += tp;
        n += gold_i;
        rows.push(sk_scores(tp, pred_i, gold_i));
    }
    let accuracy = tp_all as f64 / n as f64;
    let micro = sk_scores(tp_all, n, n);
    let macro_avg = average(&rows, false);
    let weighted = average(&rows, true);
    Ok(ClassificationReport {
        accuracy,
        per_class: labels.iter().cloned().zip(rows).collect(),
        labels,
        micro,
        macro_avg,
        weighted,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_report() {
        let gold = ["a", "a", "b", "c"];
        let pred = ["a", "b", "b", "b"];
        let r = classification_report(&gold, &pred).unwrap();
        assert_eq!(r.accuracy, 0.5);
        assert_eq!(r.labels, vec!["a", "b", "c"]);
        let b = &r.per_class["b"];
        assert!((b.precision - 1.0 / 3.0).abs() < 1e-15 && b.recall == 1.0);
        assert_eq!(r.per_class["c"].f1, 0.0);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 0]]
        );
        assert!(classification_report(&["a"], &[]).is_err());
    }
}
