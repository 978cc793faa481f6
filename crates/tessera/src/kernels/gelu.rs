//! GELU (tanh approximation) forward and backward in one pass each.

use super::{float_dispatch, par_rows, slice, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

const K: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const C: f64 = 0.044_715;

struct GeluTanh;
struct GeluTanhGrad;

// 0.5 (1 + tanh(z)) = sigmoid(2z): the same function through one exp instead of a slow tanh.
#[inline]
fn fwd<T: Float>(x: T) -> T {
    let (k2, c) = (T::from_f64(2.0 * K), T::from_f64(C));
    let z2 = k2 * (x + c * x * x * x);
    x / (T::one() + (-z2).exp())
}

#[inline]
fn grad<T: Float>(x: T) -> T {
    let (k2, c, three) = (T::from_f64(2.0 * K), T::from_f64(C), T::from_f64(3.0));
    let s = T::one() / (T::one() + (-(k2 * (x + c * x * x * x))).exp());
    s + x * s * (T::one() - s) * k2 * (T::one() + three * c * x * x)
}

fn map1<F: Float>(x: &[F]) -> CpuStorage {
    let mut y = vec![F::zero(); x.len()];
    par_rows(&mut y, 4096, |i, out| {
        for (o, &xv) in out.iter_mut().zip(&x[i * 4096..]) {
            *o = fwd(xv);
        }
    });
    F::to_cpu_storage_owned(y)
}

fn map2<F: Float>(x: &[F], g: &[F]) -> CpuStorage {
    let mut dx = vec![F::zero(); x.len()];
    par_rows(&mut dx, 4096, |i, out| {
        let base = i * 4096;
        for (j, o) in out.iter_mut().enumerate() {
            *o = grad(x[base + j]) * g[base + j];
        }
    });
    F::to_cpu_storage_owned(dx)
}

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "fused-gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(s, self.name(), |F| Ok((
            map1::<F>(slice(s, l)?),
            l.shape().clone()
        )))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &GeluTanhGrad,
        )?))
    }
}

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "fused-gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(s1, self.name(), |F| Ok((
            map2::<F>(slice(s1, l1)?, slice(s2, l2)?),
            l1.shape().clone()
        )))
    }
}

/// GELU with the tanh approximation (`gelu_new`), fused on the CPU.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluTanh)
}
