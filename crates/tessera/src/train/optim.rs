//! AdamW with decoupled weight decay and per-parameter decay groups.
//!
//! Two implementations of one update: a fused loop over f32 slices (CPU, fast) and the same
//! arithmetic in tensor ops (any device). A test checks that they agree.

use crate::models::ParamStore;
use crate::Result;
use candle_core::{DType, Device, Tensor, Var};

/// AdamW hyper-parameters and moment estimates.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken so far.
    pub step: u64,
    /// First moments, one per parameter (same shape).
    pub m: Vec<Tensor>,
    /// Second moments.
    pub v: Vec<Tensor>,
    /// Whether each parameter gets weight decay.
    decay: Vec<bool>,
}

impl AdamW {
    /// Zeroed moments for `params`.
    pub fn new(
        params: &ParamStore,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            m: params
                .vars
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            v: params
                .vars
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            decay: params.specs.iter().map(|s| s.decay).collect(),
        })
    }

    /// One update of every parameter from its gradient (`grads[i]` matches `params.vars[i]`).
    pub fn step(&mut self, params: &ParamStore, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        for (i, (var, grad)) in params.vars.iter().zip(grads).enumerate() {
            let wd = if self.decay[i] {
                self.weight_decay
            } else {
                0.0
            };
            if var.device().is_cpu() && var.dtype() == DType::F32 {
                self.step_cpu(i, var, grad, lr, wd)?;
            } else {
                self.step_tensor(i, var, grad, lr, wd)?;
            }
        }
        Ok(())
    }

    fn step_cpu(&mut self, i: usize, var: &Var, grad: &Tensor, lr: f64, wd: f64) -> Result<()> {
        let shape = var.shape().clone();
        let mut p: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let mut m: Vec<f32> = self.m[i].flatten_all()?.to_vec1()?;
        let mut v: Vec<f32> = self.v[i].flatten_all()?.to_vec1()?;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let decay = (1.0 - lr * wd) as f32;
        let eps = self.eps as f32;
        let inv_bc2_sqrt = (1.0 / bc2_sqrt) as f32;
        for j in 0..p.len() {
            let gj = g[j];
            m[j] = b1 * m[j] + (1.0 - b1) * gj;
            v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
            let denom = v[j].sqrt() * inv_bc2_sqrt + eps;
            p[j] = p[j] * decay - step_size * m[j] / denom;
        }
        let dev = Device::Cpu;
        var.set(&Tensor::from_vec(p, &shape, &dev)?)?;
        self.m[i] = Tensor::from_vec(m, &shape, &dev)?;
        self.v[i] = Tensor::from_vec(v, &shape, &dev)?;
        Ok(())
    }

    /// Reference implementation in tensor ops (works on every device and dtype).
    fn step_tensor(&mut self, i: usize, var: &Var, grad: &Tensor, lr: f64, wd: f64) -> Result<()> {
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let grad = grad.detach();
        let m = ((&self.m[i] * self.beta1)? + (&grad * (1.0 - self.beta1))?)?;
        let v = ((&self.v[i] * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
        let denom = ((v.sqrt()? / bc2_sqrt)? + self.eps)?;
        let update = (m.div(&denom)? * (lr / bc1))?;
        let p = ((var.as_tensor().detach() * (1.0 - lr * wd))? - update)?;
        var.set(&p)?;
        self.m[i] = m;
        self.v[i] = v;
        Ok(())
    }

    /// Use the tensor-op path for every parameter (for tests).
    #[doc(hidden)]
    pub fn step_reference(&mut self, params: &ParamStore, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        for (i, (var, grad)) in params.vars.iter().zip(grads).enumerate() {
            let wd = if self.decay[i] {
                self.weight_decay
            } else {
                0.0
            };
            self.step_tensor(i, var, grad, lr, wd)?;
        }
        Ok(())
    }
}

/// Global L2 norm of all gradients.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads {
        total += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelConfig;
    use crate::util::rng::Rng;

    #[test]
    fn fused_cpu_update_equals_tensor_reference() {
        let cfg =
            ModelConfig::from_hf_json(&serde_json::json!({"model_type": "gpt2", "vocab_size": 20,
            "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 8}))
            .unwrap();
        let mut rng = Rng::new(1);
        let a = ParamStore::init(&cfg, &mut rng, DType::F32, &Device::Cpu).unwrap();
        let b = ParamStore::init(&cfg, &mut Rng::new(1), DType::F32, &Device::Cpu).unwrap();
        let mut oa = AdamW::new(&a, 0.9, 0.95, 1e-8, 0.1).unwrap();
        let mut ob = AdamW::new(&b, 0.9, 0.95, 1e-8, 0.1).unwrap();
        for _ in 0..3 {
            let grads: Vec<Tensor> = a
                .vars
                .iter()
                .map(|v| {
                    let n = v.elem_count();
                    let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
                    Tensor::from_vec(g, v.shape(), &Device::Cpu).unwrap()
                })
                .collect();
            oa.step(&a, &grads, 1e-2).unwrap();
            ob.step_reference(&b, &grads, 1e-2).unwrap();
        }
        for (x, y) in a.vars.iter().zip(&b.vars) {
            let d = (x.as_tensor() - y.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        }
        // Norm weights (ones, no decay, zero gradient mean) vs decayed matrices are in different groups.
        assert!(a.specs.iter().any(|s| s.decay) && a.specs.iter().any(|s| !s.decay));
        assert!(a
            .specs
            .iter()
            .filter(|s| s.name.contains("wte")
                || s.name.contains("wpe")
                || s.name.ends_with("bias")
                || s.name.contains("ln_"))
            .all(|s| !s.decay));
    }
}
