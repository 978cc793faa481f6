//! Tensor comparisons shared by the test files (`#[path]`-included).
#![allow(dead_code)]

use tessera::{DType, Tensor};

/// Largest absolute element of `a`, in f64.
pub fn max_abs(a: &Tensor) -> f64 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Largest absolute difference of two tensors of one shape, in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).unwrap())
}
