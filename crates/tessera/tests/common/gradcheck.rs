//! Finite-difference gradient checks shared by the test files (`#[path]`-included).
//!
//! For each checked entry x_j: numeric = (f(x + h e_j) - f(x - h e_j)) / 2h with h = 1e-5.
//! Tolerance: |analytic - numeric| <= 1e-6 * max(1, |analytic| + |numeric|). In f64 the
//! truncation error is O(h^2) ~ 1e-10 and the rounding error O(eps / h) ~ 1e-11, so 1e-6 leaves
//! a wide margin while still catching any wrong formula (those are off by O(1)).
#![allow(dead_code)]

use candle_core::Var;
use tessera::util::rng::Rng;
use tessera::{Device, Tensor};

pub const H: f64 = 1e-5;
pub const TOL: f64 = 1e-6;

pub fn randn(rng: &mut Rng, shape: &[usize], std: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal() * std).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn var(rng: &mut Rng, shape: &[usize], std: f64) -> Var {
    Var::from_tensor(&randn(rng, shape, std)).unwrap()
}

/// Check d f / d v for every var in `vars`, at up to `per_var` entries each.
pub fn check(name: &str, vars: &[&Var], per_var: usize, f: &dyn Fn() -> Tensor) {
    let loss = f();
    let grads = loss.backward().unwrap();
    let mut rng = Rng::new(99);
    for (vi, v) in vars.iter().enumerate() {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: input {vi} received no gradient"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = base.len();
        let idx: Vec<usize> = if n <= per_var {
            (0..n).collect()
        } else {
            (0..per_var).map(|_| rng.below(n)).collect()
        };
        for j in idx {
            let eval_at = |delta: f64| {
                let mut p = base.clone();
                p[j] += delta;
                v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                f().to_scalar::<f64>().unwrap()
            };
            let num = (eval_at(H) - eval_at(-H)) / (2.0 * H);
            v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let ana = g[j];
            let err = (ana - num).abs();
            assert!(
                err <= TOL * (1.0f64).max(ana.abs() + num.abs()),
                "{name}: input {vi} entry {j}: analytic {ana} vs numeric {num}"
            );
        }
    }
}

/// A fixed random projection of the output to a scalar, so every output element matters.
pub fn project(y: &Tensor, seed: u64) -> Tensor {
    let w = randn(&mut Rng::new(seed), y.dims(), 1.0);
    (y * w).unwrap().sum_all().unwrap()
}
