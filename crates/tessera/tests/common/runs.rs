//! Training runs as tests read them: a trainer's weights, the steps a run logged, and their
//! comparison (`#[path]`-included, also by `tessera-cli/tests/distributed.rs`).
#![allow(dead_code)]

use std::path::Path;
use tessera::train::Trainer;

/// Every parameter of `t`, flattened, in the trainer's order.
pub fn weights(t: &Trainer) -> Vec<Vec<f32>> {
    t.params
        .vars
        .iter()
        .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

/// (loss, grad_norm) of every step in the run directory's `metrics.jsonl`.
pub fn step_lines(run: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The same number of steps, each loss and gradient norm of `b` within `first` (step 1) or
/// `later` (the others) relative of `a`'s.
pub fn close_steps(a: &[(f64, f64)], b: &[(f64, f64)], first: f64, later: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: steps {a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = if i == 0 { first } else { later };
        for (p, q) in [(x.0, y.0), (x.1, y.1)] {
            assert!(
                (p - q).abs() <= tol * p.abs(),
                "{what}: step {} {p} vs {q} (bound {tol})",
                i + 1
            );
        }
    }
}
