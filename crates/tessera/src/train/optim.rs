//! AdamW with decoupled weight decay and per-parameter decay groups.
//!
//! Two implementations of one update: a fused loop over f32 slices (CPU, fast) and the same
//! arithmetic in tensor ops (any device). A test checks that they agree.

use crate::models::ParamStore;
use crate::Result;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

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
        self.update(&params.vars, grads, lr)
    }

    /// [`AdamW::step`] on the variables themselves (in the order the optimizer was made for).
    pub fn update(&mut self, vars: &[Var], grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        for (i, (var, grad)) in vars.iter().zip(grads).enumerate() {
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

    /// The fused update on CPU f32 data, in place: the moments and the parameter are updated in
    /// their own storage (no copies out and back), in three element-wise passes.
    fn step_cpu(&mut self, i: usize, var: &Var, grad: &Tensor, lr: f64, wd: f64) -> Result<()> {
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let grad = grad.contiguous()?;
        let m = &self.m[i];
        let v = &self.v[i];
        if grad.shape() != var.shape() || m.shape() != var.shape() || v.shape() != var.shape() {
            return Err(crate::Error::Input(format!(
                "adamw: parameter {:?}, gradient {:?}, moments {:?} / {:?}",
                var.shape(),
                grad.shape(),
                m.shape(),
                v.shape()
            )));
        }
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        m.inplace_op2(
            &grad,
            &Moment {
                beta: b1,
                square: false,
            },
        )?;
        v.inplace_op2(
            &grad,
            &Moment {
                beta: b2,
                square: true,
            },
        )?;
        var.as_tensor().inplace_op3(
            m,
            v,
            &Update {
                step_size: (lr / bc1) as f32,
                decay: (1.0 - lr * wd) as f32,
                eps: self.eps as f32,
                inv_bc2_sqrt: (1.0 / bc2_sqrt) as f32,
            },
        )?;
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

/// The contiguous f32 data of an in-place operand.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("adamw: operand must be contiguous".into()))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// The mutable contiguous f32 data of an in-place destination.
fn data_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("adamw: operand must be contiguous".into()))?;
    match s {
        CpuStorage::F32(d) => Ok(&mut d[a..b]),
        _ => candle_core::bail!("adamw: the fused update is for f32"),
    }
}

/// `f(offset, chunk)` over chunks of `x`, in parallel when `x` is large (element-wise updates:
/// the result does not depend on the split).
fn chunked(x: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    if x.len() >= 1 << 16 {
        x.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(i * CHUNK, c));
    } else {
        f(0, x);
    }
}

/// A moment estimate in place: `m = β m + (1 − β) g` (or `g²` for the second moment).
struct Moment {
    beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let m = data_mut(dst, dst_l)?;
        let g = data(g, gl)?;
        let b = self.beta;
        let square = self.square;
        chunked(m, |j0, m| {
            let g = &g[j0..j0 + m.len()];
            if square {
                for (m, &g) in m.iter_mut().zip(g) {
                    *m = b * *m + (1.0 - b) * g * g;
                }
            } else {
                for (m, &g) in m.iter_mut().zip(g) {
                    *m = b * *m + (1.0 - b) * g;
                }
            }
        });
        Ok(())
    }
}

/// The parameter step in place from the updated moments:
/// `p = p (1 − lr wd) − (lr / bc1) m / (√v / √bc2 + eps)`.
struct Update {
    step_size: f32,
    decay: f32,
    eps: f32,
    inv_bc2_sqrt: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let p = data_mut(dst, dst_l)?;
        let (m, v) = (data(m, ml)?, data(v, vl)?);
        chunked(p, |j0, p| {
            let (m, v) = (&m[j0..j0 + p.len()], &v[j0..j0 + p.len()]);
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                let denom = v.sqrt() * self.inv_bc2_sqrt + self.eps;
                *p = *p * self.decay - self.step_size * m / denom;
            }
        });
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
    use crate::models::TransformerConfig;
    use crate::util::rng::Rng;
    use candle_core::Device;

    #[test]
    fn fused_cpu_update_equals_tensor_reference() {
        let cfg = TransformerConfig::from_hf_json(
            &serde_json::json!({"model_type": "gpt2", "vocab_size": 20,
            "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 8}),
        )
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
