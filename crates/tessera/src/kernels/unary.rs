//! One fused element-wise op with its backward, shared by the activations: forward `y = f(x)` and
//! backward `dx = f'(x) · dy`, each a single parallel pass over contiguous data.

use super::gelu_erf::Erf;
use super::{float_dispatch, par_rows, slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// Elements per parallel work item.
const CHUNK: usize = 4096;

/// An element-wise function and its derivative, for f32 and f64.
pub(crate) trait UnaryFn: Copy + Send + Sync + 'static {
    /// Name of the forward op.
    const NAME: &'static str;
    /// Name of the gradient op.
    const GRAD_NAME: &'static str;
    /// f(x)
    fn f<T: Erf>(x: T) -> T;
    /// f'(x)
    fn df<T: Erf>(x: T) -> T;
}

struct Forward<A>(A);
struct Gradient<A>(A);

/// `op` is a function item (not a pointer), so it inlines and the loops vectorize.
fn map<F: Erf, O: Fn(F) -> F + Sync>(x: &[F], g: Option<&[F]>, op: O) -> CpuStorage {
    let mut y = vec![F::zero(); x.len()];
    par_rows(&mut y, CHUNK, |i, out| {
        let xs = &x[i * CHUNK..i * CHUNK + out.len()];
        let gs = g.map(|g| &g[i * CHUNK..i * CHUNK + out.len()]);
        map_chunk(out, xs, gs, &op);
    });
    F::to_cpu_storage_owned(y)
}

/// out = op(x) (⊙ g)
#[inline(always)]
fn map_chunk<F: Erf, O: Fn(F) -> F>(out: &mut [F], xs: &[F], g: Option<&[F]>, op: &O) {
    match g {
        Some(g) => {
            for ((o, &xv), &gv) in out.iter_mut().zip(xs).zip(g) {
                *o = op(xv) * gv;
            }
        }
        None => {
            for (o, &xv) in out.iter_mut().zip(xs) {
                *o = op(xv);
            }
        }
    }
}

impl<A: UnaryFn> CustomOp1 for Forward<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(s, self.name(), |F| Ok((
            map::<F, _>(slice(s, l)?, None, A::f::<F>),
            l.shape().clone()
        )))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &Gradient(self.0),
        )?))
    }
}

impl<A: UnaryFn> CustomOp2 for Gradient<A> {
    fn name(&self) -> &'static str {
        A::GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(s1, self.name(), |F| Ok((
            map::<F, _>(slice(s1, l1)?, Some(slice(s2, l2)?), A::df::<F>),
            l1.shape().clone()
        )))
    }
}

/// Apply `a` element-wise (CPU, f32/f64), with its backward.
pub(crate) fn apply<A: UnaryFn>(x: &Tensor, a: A) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Forward(a))
}
