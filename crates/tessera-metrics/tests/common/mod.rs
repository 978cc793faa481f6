//! Helpers shared by the integration tests.
#![allow(dead_code)]

use serde_json::Value;

/// The fixtures store floats rounded to 6 decimals: equal means within 5e-7.
pub const TOL: f64 = 5e-7;

pub fn load(path: &str) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {path}: {e}"))
}

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

pub fn close(ours: f64, want: &Value, what: &str) {
    let w = f(want);
    assert!(
        (ours - w).abs() <= TOL,
        "{what}: ours {ours:.9} vs reference {w} (diff {:.3e})",
        (ours - w).abs()
    );
}

/// Python's `round(x, 6)` (round-half-even on the binary value; for test means only).
pub fn round6(x: f64) -> f64 {
    let s = format!("{x:.6}");
    s.parse().unwrap_or(x)
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `(hyps, refs per segment)` from a fixture corpus `segments` array of `{hyp, refs}`.
pub fn segments(c: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let segs = c["segments"].as_array().unwrap();
    let hyps = segs
        .iter()
        .map(|s| s["hyp"].as_str().unwrap().to_string())
        .collect();
    let refs = segs.iter().map(|s| strs(&s["refs"])).collect();
    (hyps, refs)
}

pub fn as_refs(r: &[Vec<String>]) -> Vec<Vec<&str>> {
    r.iter()
        .map(|v| v.iter().map(|s| s.as_str()).collect())
        .collect()
}

pub fn as_strs(h: &[String]) -> Vec<&str> {
    h.iter().map(|s| s.as_str()).collect()
}
