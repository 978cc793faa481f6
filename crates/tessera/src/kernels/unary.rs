//! One fused element-wise op with its backward, shared by the activations: forward `y = f(x)` and
//! backward `dx = f'(x) · dy`, each a single parallel pass over contiguous data.

use super::erf::Erf;
use super::{float_dispatch, slice};
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
    F::to_cpu_storage_owned(map_vec(x, g, op))
}

/// `op(x)` (⊙ `g`) element-wise into a new vector: parallel in chunks when large, every element
/// written once (no zeroing pass first).
pub(crate) fn map_vec<F: Erf, O: Fn(F) -> F + Sync>(x: &[F], g: Option<&[F]>, op: O) -> Vec<F> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    if let Some(g) = g {
        assert_eq!(
            g.len(),
            x.len(),
            "element-wise map: operands differ in length"
        );
    }
    let mut y: Vec<F> = Vec::with_capacity(x.len());
    let chunk = |i: usize, out: &mut [MaybeUninit<F>]| {
        let xs = &x[i * CHUNK..i * CHUNK + out.len()];
        let gs = g.map(|g| &g[i * CHUNK..i * CHUNK + out.len()]);
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            unsafe { map_chunk_avx512(out, xs, gs, &op) };
            return;
        }
        map_chunk(out, xs, gs, &op);
    };
    let out = &mut y.spare_capacity_mut()[..x.len()];
    if x.len() >= 1 << 15 {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, o)| chunk(i, o));
    } else {
        out.chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, o)| chunk(i, o));
    }
    // SAFETY: the chunks cover all x.len() elements and map_chunk wrote every one of them.
    unsafe { y.set_len(x.len()) };
    y
}

/// [`map_chunk`] built for AVX-512 (16 f32 lanes instead of the baseline's 4).
///
/// # Safety
/// The CPU must support the enabled features (see [`super::avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn map_chunk_avx512<F: Erf, O: Fn(F) -> F>(
    out: &mut [std::mem::MaybeUninit<F>],
    xs: &[F],
    g: Option<&[F]>,
    op: &O,
) {
    map_chunk(out, xs, g, op)
}

/// out = op(x) (⊙ g)
#[inline(always)]
fn map_chunk<F: Erf, O: Fn(F) -> F>(
    out: &mut [std::mem::MaybeUninit<F>],
    xs: &[F],
    g: Option<&[F]>,
    op: &O,
) {
    match g {
        Some(g) => {
            for ((o, &xv), &gv) in out.iter_mut().zip(xs).zip(g) {
                o.write(op(xv) * gv);
            }
        }
        None => {
            for (o, &xv) in out.iter_mut().zip(xs) {
                o.write(op(xv));
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

/// `f(gate) ⊙ up` as one op (a gated MLP's activation), forward in one pass.
struct Gated<A>(A);

impl<A: UnaryFn> CustomOp2 for Gated<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("gated activation: {:?} vs {:?}", l1.shape(), l2.shape());
        }
        float_dispatch!(s1, self.name(), |F| Ok((
            map::<F, _>(slice(s1, l1)?, Some(slice(s2, l2)?), A::f::<F>),
            l1.shape().clone()
        )))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // d gate = f'(gate) ⊙ up ⊙ dy;  d up = f(gate) ⊙ dy.
        let dgate = gate.apply_op2_no_bwd(&(up * &dy)?, &Gradient(self.0))?;
        let dup = gate.apply_op2_no_bwd(&dy, &Gated(self.0))?;
        Ok((Some(dgate), Some(dup)))
    }
}

/// `a(gate) ⊙ up` element-wise (CPU, f32/f64, same shapes), with its backward: the activation's
/// output is never a tensor of its own.
pub(crate) fn apply_gated<A: UnaryFn>(gate: &Tensor, up: &Tensor, a: A) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, Gated(a))
}

/// Apply `a` element-wise (CPU, f32/f64), with its backward.
pub(crate) fn apply<A: UnaryFn>(x: &Tensor, a: A) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Forward(a))
}
