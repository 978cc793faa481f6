//! Dense linear layer `y = x M + b` as one op with its backward (M = Wᵀ for a `torch.nn.Linear`
//! weight W (out, in), M = W for GPT-2's `Conv1D` weight (in, out)).
//!
//! Forward: the output rows start as copies of b and the matrix product accumulates onto them
//! (no separate broadcast add). Backward, one op writing `[dx | dW | db]` into one buffer:
//!   dx = dy Mᵀ,   dM = xᵀ dy,   db = Σ_rows dy
//! The products read the weight in its stored layout (no transposed copies). The reference is the
//! composition of engine ops in `nn::Linear::forward_reference`.

use super::erf::Erf;
use super::matmul::{filled, gemm, SendPtr, View};
use super::segment::{Backward, Grads};
use super::unary::{map_vec, UnaryFn};
use super::{float_dispatch, slice, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

#[derive(Clone, Copy)]
pub(crate) struct Dims {
    /// Rows of x (all leading dimensions).
    n: usize,
    inp: usize,
    pub(crate) out: usize,
    /// Weight stored (in, out).
    transposed: bool,
}

impl Dims {
    pub(crate) fn of(x: &Layout, w: &Layout, transposed: bool) -> Result<Dims> {
        let xd = x.shape().dims();
        let inp = *xd
            .last()
            .ok_or_else(|| candle_core::Error::Msg("linear: input is a scalar".into()))?;
        let (r, c) = w.shape().dims2()?;
        let (win, out) = if transposed { (r, c) } else { (c, r) };
        if win != inp {
            candle_core::bail!("linear: input has {inp} features, the weight {win}");
        }
        Ok(Dims {
            n: x.shape().elem_count() / inp.max(1),
            inp,
            out,
            transposed,
        })
    }

    /// [`Dims::of`], and the bias checked against the output width.
    pub(crate) fn with_bias(x: &Layout, w: &Layout, b: &Layout, transposed: bool) -> Result<Dims> {
        let d = Self::of(x, w, transposed)?;
        if b.shape().elem_count() != d.out {
            candle_core::bail!(
                "linear: bias has {} elements, the output {}",
                b.shape().elem_count(),
                d.out
            );
        }
        Ok(d)
    }

    /// M (in × out) as a view of the stored weight.
    fn m<F>(&self, w: &[F]) -> View<F> {
        if self.transposed {
            View::rows(w, 0, self.out)
        } else {
            View::cols(w, 0, self.inp)
        }
    }

    /// Mᵀ (out × in) as a view of the stored weight.
    fn mt<F>(&self, w: &[F]) -> View<F> {
        if self.transposed {
            View::cols(w, 0, self.out)
        } else {
            View::rows(w, 0, self.inp)
        }
    }

    fn out_shape(&self, x: &Layout) -> Shape {
        let mut s = x.shape().dims().to_vec();
        if let Some(l) = s.last_mut() {
            *l = self.out;
        }
        Shape::from(s)
    }
}

fn forward<F: Float>(x: &[F], w: &[F], b: Option<&[F]>, d: Dims) -> CpuStorage {
    F::to_cpu_storage_owned(forward_vec(x, w, b, d))
}

/// Rows `0..n` of the (n, b.len()) row-major buffer at `y` set to copies of `b`, rows in
/// parallel when large.
///
/// # Safety
/// `y` must be valid for writes of `n · b.len()` elements, and nothing else may access them.
unsafe fn fill_rows<F: Float>(y: *mut F, n: usize, b: &[F]) {
    use rayon::prelude::*;
    let out = b.len();
    let y = SendPtr(y);
    let copy = |i: usize| {
        // SAFETY: row i lies inside the buffer (i < n); rows are disjoint.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), y.get().add(i * out), out) }
    };
    if n * out >= 1 << 16 {
        (0..n)
            .into_par_iter()
            .with_min_len((4096 / out.max(1)).max(1))
            .for_each(copy);
    } else {
        (0..n).for_each(copy);
    }
}

/// `x M (+ b)` into a new (n, out) vector.
pub(crate) fn forward_vec<F: Float>(x: &[F], w: &[F], b: Option<&[F]>, d: Dims) -> Vec<F> {
    // SAFETY: x is (n, in) row-major, w holds in·out elements, y is (n, out). Every element of y
    // is written: with a bias, rows of b first, then the product adds onto them; without one, the
    // product writes them all (zeroing them when in = 0).
    unsafe {
        filled(d.n * d.out, |y: *mut F| {
            if let Some(b) = b {
                fill_rows(y, d.n, b);
            }
            gemm(
                (d.n, d.out, d.inp),
                y,
                d.out,
                b.is_some(),
                View::rows(x, 0, d.inp),
                d.m(w),
                true,
            )
        })
    }
}

/// `[dx | dW | db]` of `x M + b` for the output gradient dy, as one flat buffer.
pub(crate) fn backward<F: Float>(
    x: &[F],
    w: &[F],
    dy: &[F],
    d: Dims,
    bias: bool,
) -> (CpuStorage, Shape) {
    let (n, inp, out) = (d.n, d.inp, d.out);
    let len = n * inp + inp * out + if bias { out } else { 0 };
    let dyv = View::rows(dy, 0, out);
    // SAFETY: dx, dW and db are disjoint parts of the buffer, each written in full: the products
    // write every element of theirs (zeroing them when the inner dimension is 0); db is zeroed
    // and then summed into.
    let all = unsafe {
        filled(len, |all: *mut F| {
            let (dx, dw) = (all, all.add(n * inp));
            // dx (n × in) = dy (n × out) · Mᵀ (out × in)
            gemm((n, inp, out), dx, inp, false, dyv, d.mt(w), true);
            if d.transposed {
                // dW = dM (in × out) = xᵀ (in × n) · dy (n × out)
                let xt = View::cols(x, 0, inp);
                gemm((inp, out, n), dw, out, false, xt, dyv, true);
            } else {
                // dW = dMᵀ (out × in) = dyᵀ (out × n) · x (n × in)
                let dyt = View::cols(dy, 0, out);
                let xv = View::rows(x, 0, inp);
                gemm((out, inp, n), dw, inp, false, dyt, xv, true);
            }
            if bias {
                let db = std::slice::from_raw_parts_mut(all.add(n * inp + inp * out), out);
                column_sums(dy, out, db);
            }
        })
    };
    (F::to_cpu_storage_owned(all), Shape::from(len))
}

/// `db[j] = Σ_i dy[i, j]` over the rows of `dy` (row length `out`), rows summed in order (the
/// same result on any number of threads); columns split across threads when the work is large.
fn column_sums<F: Float>(dy: &[F], out: usize, db: &mut [F]) {
    use rayon::prelude::*;
    const COLS: usize = 64;
    let sum = |j0: usize, s: &mut [F]| {
        s.fill(F::zero());
        for row in dy.chunks(out.max(1)) {
            for (a, &g) in s.iter_mut().zip(&row[j0..]) {
                *a += g;
            }
        }
    };
    if dy.len() >= 1 << 17 && out > COLS {
        db.par_chunks_mut(COLS)
            .enumerate()
            .for_each(|(c, s)| sum(c * COLS, s));
    } else {
        sum(0, db);
    }
}

/// `(dx, dW, db)` as views of one flat `[dx | dW | db]` buffer.
pub(crate) fn split_grads(
    all: &Tensor,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (nx, nw) = (x.elem_count(), w.elem_count());
    let dx = all.narrow(0, 0, nx)?.reshape(x.shape())?;
    let dw = all.narrow(0, nx, nw)?.reshape(w.shape())?;
    let db = match b {
        Some(b) => Some(all.narrow(0, nx + nw, b.elem_count())?),
        None => None,
    };
    Ok((dx, dw, db))
}

struct LinearOp {
    transposed: bool,
}

impl Backward for LinearOp {
    fn grads(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, dy: &Tensor) -> Result<Grads> {
        let grad = LinearGrad {
            transposed: self.transposed,
            bias: b.is_some(),
        };
        let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &grad)?; // [dx | dW | db]
        split_grads(&all, x, w, b)
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2, self.transposed)?;
        float_dispatch!(s1, "fused-linear", |F| Ok((
            forward::<F>(slice(s1, l1)?, slice(s2, l2)?, None, d),
            d.out_shape(l1)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::with_bias(l1, l2, l3, self.transposed)?;
        float_dispatch!(s1, "fused-linear-bias", |F| Ok((
            forward::<F>(slice(s1, l1)?, slice(s2, l2)?, Some(slice(s3, l3)?), d),
            d.out_shape(l1)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, Some(b), dy)?;
        Ok((Some(dx), Some(dw), db))
    }
}

struct LinearGrad {
    transposed: bool,
    bias: bool,
}

impl CustomOp3 for LinearGrad {
    fn name(&self) -> &'static str {
        "fused-linear-grad"
    }

    /// Output: `[dx (N·in) | dW (in·out) | db (out, with a bias)]` as one flat vector.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2, self.transposed)?;
        if l3.shape().elem_count() != d.n * d.out {
            candle_core::bail!("linear grad: output gradient has the wrong size");
        }
        let bias = self.bias;
        float_dispatch!(s1, self.name(), |F| Ok(backward::<F>(
            slice(s1, l1)?,
            slice(s2, l2)?,
            slice(s3, l3)?,
            d,
            bias
        )))
    }
}

/// `x M + b` for x (..., in) -> (..., out), fused on the CPU (f32 / f64): the weight is (out, in)
/// (`M = Wᵀ`), or (in, out) when `transposed` (`M = W`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = LinearOp { transposed };
    match b {
        Some(b) => super::segment::apply3(op, &x, &w, &b.contiguous()?),
        None => super::segment::apply2(op, &x, &w),
    }
}

/// The pre-activation `x M + b` a fused linear + activation keeps for its backward pass (the
/// float type erased; shared, so a second backward pass over the same graph still finds it).
type Saved = std::sync::Mutex<Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>>;

/// `act(x M + b)` as one op: forward keeps the pre-activation `z = x M + b`; backward forms
/// `dz = act'(z) ⊙ dy` and runs the linear backward on it (one `[dx | dW | db]` buffer).
struct LinearActOp<A: UnaryFn> {
    transposed: bool,
    pre: Saved,
    _act: std::marker::PhantomData<A>,
}

impl<A: UnaryFn> LinearActOp<A> {
    fn fwd<F: Erf>(&self, x: &[F], w: &[F], b: Option<&[F]>, d: Dims) -> CpuStorage {
        let mut z = forward_vec(x, w, None, d);
        let y = match b {
            // The bias joins in the activation pass: z += b, y = act(z), one pass over z.
            Some(b) => bias_map(&mut z, b, A::f::<F>),
            None => map_vec(&z, None, A::f::<F>),
        };
        if let Ok(mut keep) = self.pre.lock() {
            *keep = Some(std::sync::Arc::new(z));
        }
        F::to_cpu_storage_owned(y)
    }
}

impl<A: UnaryFn> Backward for LinearActOp<A> {
    fn grads(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, dy: &Tensor) -> Result<Grads> {
        let pre = match self.pre.lock().ok().and_then(|p| p.clone()) {
            Some(p) => p,
            None => candle_core::bail!("fused linear+activation: backward without a forward"),
        };
        let grad = LinearActGrad::<A> {
            transposed: self.transposed,
            bias: b.is_some(),
            pre,
            _act: std::marker::PhantomData,
        };
        let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &grad)?; // [dx | dW | db]
        split_grads(&all, x, w, b)
    }
}

impl<A: UnaryFn> CustomOp2 for LinearActOp<A> {
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
        let d = Dims::of(l1, l2, self.transposed)?;
        float_dispatch!(s1, "fused-linear-act", |F| Ok((
            self.fwd::<F>(slice(s1, l1)?, slice(s2, l2)?, None, d),
            d.out_shape(l1)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl<A: UnaryFn> CustomOp3 for LinearActOp<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::with_bias(l1, l2, l3, self.transposed)?;
        float_dispatch!(s1, "fused-linear-act", |F| Ok((
            self.fwd::<F>(slice(s1, l1)?, slice(s2, l2)?, Some(slice(s3, l3)?), d),
            d.out_shape(l1)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, Some(b), dy)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// `z[i, :] += b` for every row of z (row length `b.len()`), and `op(z)` element-wise into a new
/// vector, in one parallel pass over row blocks.
fn bias_map<F: Erf, O: Fn(F) -> F + Sync>(z: &mut [F], b: &[F], op: O) -> Vec<F> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let out = b.len().max(1);
    let mut y: Vec<F> = Vec::with_capacity(z.len());
    let block = out * (4096 / out).max(1);
    let rows = |(zs, ys): (&mut [F], &mut [MaybeUninit<F>])| {
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            unsafe { bias_rows_avx512(zs, ys, b, &op) };
            return;
        }
        bias_rows(zs, ys, b, &op);
    };
    let ys = &mut y.spare_capacity_mut()[..z.len()];
    if z.len() >= 1 << 15 {
        z.par_chunks_mut(block)
            .zip(ys.par_chunks_mut(block))
            .for_each(rows);
    } else {
        z.chunks_mut(block).zip(ys.chunks_mut(block)).for_each(rows);
    }
    let n = z.len();
    // SAFETY: the blocks cover all z.len() elements (z.len() is a multiple of the row length) and
    // every one was written above.
    unsafe { y.set_len(n) };
    y
}

/// Rows of z (row length `b.len()`): `z += b`, `y = op(z)`.
#[inline(always)]
fn bias_rows<F: Erf, O: Fn(F) -> F>(
    zs: &mut [F],
    ys: &mut [std::mem::MaybeUninit<F>],
    b: &[F],
    op: &O,
) {
    let out = b.len().max(1);
    for (zr, yr) in zs.chunks_mut(out).zip(ys.chunks_mut(out)) {
        for ((zv, yv), &bv) in zr.iter_mut().zip(yr.iter_mut()).zip(b) {
            let v = *zv + bv;
            *zv = v;
            yv.write(op(v));
        }
    }
}

/// [`bias_rows`] built for AVX-512.
///
/// # Safety
/// The CPU must support the enabled features (see [`super::avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn bias_rows_avx512<F: Erf, O: Fn(F) -> F>(
    zs: &mut [F],
    ys: &mut [std::mem::MaybeUninit<F>],
    b: &[F],
    op: &O,
) {
    bias_rows(zs, ys, b, op)
}

struct LinearActGrad<A: UnaryFn> {
    transposed: bool,
    bias: bool,
    pre: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    _act: std::marker::PhantomData<A>,
}

impl<A: UnaryFn> CustomOp3 for LinearActGrad<A> {
    fn name(&self) -> &'static str {
        A::GRAD_NAME
    }

    /// Output: `[dx (N·in) | dW (in·out) | db (out, with a bias)]` as one flat vector.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2, self.transposed)?;
        if l3.shape().elem_count() != d.n * d.out {
            candle_core::bail!("linear grad: output gradient has the wrong size");
        }
        let bias = self.bias;
        float_dispatch!(s1, self.name(), |F| {
            let z = self
                .pre
                .downcast_ref::<Vec<F>>()
                .filter(|z| z.len() == d.n * d.out)
                .ok_or_else(|| {
                    candle_core::Error::Msg("fused linear+activation: saved input mismatch".into())
                })?;
            let dz = map_vec(z, Some(slice(s3, l3)?), A::df::<F>);
            Ok(backward::<F>(slice(s1, l1)?, slice(s2, l2)?, &dz, d, bias))
        })
    }
}

/// `act(x M + b)` for x (..., in) -> (..., out), fused on the CPU (f32 / f64), weight layout as
/// in [`linear`]. `act` is one of the element-wise functions of [`super::unary`] (GELU).
pub(crate) fn linear_act<A: UnaryFn>(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    transposed: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = LinearActOp::<A> {
        transposed,
        pre: Saved::default(),
        _act: std::marker::PhantomData,
    };
    match b {
        Some(b) => super::segment::apply3(op, &x, &w, &b.contiguous()?),
        None => super::segment::apply2(op, &x, &w),
    }
}

/// `gelu_new(x M + b)` (tanh approximation), fused on the CPU (f32 / f64).
pub fn linear_gelu_tanh(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    transposed: bool,
) -> Result<Tensor> {
    linear_act::<super::gelu::GeluTanh>(x, w, b, transposed)
}

/// `gelu(x M + b)` (exact erf form), fused on the CPU (f32 / f64).
pub fn linear_gelu_erf(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    transposed: bool,
) -> Result<Tensor> {
    linear_act::<super::gelu_erf::GeluErf>(x, w, b, transposed)
}

/// The gated MLP's first half as one op: `act(x Mg + bg) ⊙ (x Mu + bu)` for the stacked weight
/// W = [Wg; Wu] (2I, in) (Llama's `gate_proj` over `up_proj`), x (..., in) -> (..., I). Forward:
/// one product z = x Wᵀ (+ b) of width 2I, then y = act(z_g) ⊙ z_u, keeping z. Backward:
/// dz_g = dy ⊙ z_u ⊙ act'(z_g), dz_u = dy ⊙ act(z_g), then the linear backward on dz (one
/// `[dx | dW | db]` buffer). The reference is `activate(gate(x)) * up(x)` from engine ops.
struct LinearGatedOp<A: UnaryFn> {
    pre: Saved,
    _act: std::marker::PhantomData<A>,
}

/// Checked dims of a gated op: the stacked weight's rows must be even.
fn gated_dims(x: &Layout, w: &Layout) -> Result<Dims> {
    let d = Dims::of(x, w, false)?;
    if !d.out.is_multiple_of(2) {
        candle_core::bail!("gated linear: the stacked weight has an odd number of rows");
    }
    Ok(d)
}

/// One row of [`gate_rows`].
#[inline(always)]
fn gate_row<F: Erf, A: UnaryFn>(yr: &mut [F], zr: &[F]) {
    let (g, u) = zr.split_at(yr.len());
    for ((o, &gv), &uv) in yr.iter_mut().zip(g).zip(u) {
        *o = A::f(gv) * uv;
    }
}

/// One row of [`gate_grad_rows`].
#[inline(always)]
fn gate_grad_row<F: Erf, A: UnaryFn>(dzr: &mut [F], zr: &[F], dyr: &[F]) {
    let i = dyr.len();
    let (dg, du) = dzr.split_at_mut(i);
    let (g, u) = zr.split_at(i);
    for j in 0..i {
        dg[j] = dyr[j] * u[j] * A::df(g[j]);
        du[j] = dyr[j] * A::f(g[j]);
    }
}

/// [`gate_row`] built for AVX-512 (bit-identical results, see [`super::avx512`]).
///
/// # Safety
/// The CPU must support the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn gate_row_avx512<F: Erf, A: UnaryFn>(yr: &mut [F], zr: &[F]) {
    gate_row::<F, A>(yr, zr)
}

/// [`gate_grad_row`] built for AVX-512.
///
/// # Safety
/// The CPU must support the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn gate_grad_row_avx512<F: Erf, A: UnaryFn>(dzr: &mut [F], zr: &[F], dyr: &[F]) {
    gate_grad_row::<F, A>(dzr, zr, dyr)
}

/// `y[r, j] = f(z[r, j]) · z[r, I + j]` for rows of z of width 2I.
fn gate_rows<F: Erf, A: UnaryFn>(z: &[F], i: usize) -> Vec<F> {
    let n = z.len() / (2 * i).max(1);
    super::new_rows(n * i, i, |r, yr| {
        let zr = &z[r * 2 * i..(r + 1) * 2 * i];
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            unsafe { gate_row_avx512::<F, A>(yr, zr) };
            return;
        }
        gate_row::<F, A>(yr, zr)
    })
}

/// dz (n, 2I) from dy (n, I) and the kept z (see [`LinearGatedOp`]).
fn gate_grad_rows<F: Erf, A: UnaryFn>(z: &[F], dy: &[F], i: usize) -> Vec<F> {
    super::new_rows(z.len(), 2 * i, |r, dzr| {
        let (zr, dyr) = (&z[r * 2 * i..(r + 1) * 2 * i], &dy[r * i..(r + 1) * i]);
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: the CPU has the features the AVX-512 build was compiled for.
            unsafe { gate_grad_row_avx512::<F, A>(dzr, zr, dyr) };
            return;
        }
        gate_grad_row::<F, A>(dzr, zr, dyr)
    })
}

impl<A: UnaryFn> LinearGatedOp<A> {
    fn fwd<F: Erf>(&self, x: &[F], w: &[F], b: Option<&[F]>, d: Dims) -> CpuStorage {
        let z = forward_vec(x, w, b, d);
        let y = gate_rows::<F, A>(&z, d.out / 2);
        if let Ok(mut keep) = self.pre.lock() {
            *keep = Some(std::sync::Arc::new(z));
        }
        F::to_cpu_storage_owned(y)
    }

    fn out_shape(d: &Dims, x: &Layout) -> Shape {
        let mut s = x.shape().dims().to_vec();
        if let Some(l) = s.last_mut() {
            *l = d.out / 2;
        }
        Shape::from(s)
    }
}

impl<A: UnaryFn> Backward for LinearGatedOp<A> {
    fn grads(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, dy: &Tensor) -> Result<Grads> {
        let pre = match self.pre.lock().ok().and_then(|p| p.clone()) {
            Some(p) => p,
            None => candle_core::bail!("gated linear: backward without a forward"),
        };
        let grad = LinearGatedGrad::<A> {
            bias: b.is_some(),
            pre,
            _act: std::marker::PhantomData,
        };
        let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &grad)?; // [dx | dW | db]
        split_grads(&all, x, w, b)
    }
}

impl<A: UnaryFn> CustomOp2 for LinearGatedOp<A> {
    fn name(&self) -> &'static str {
        "fused-linear-gated"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = gated_dims(l1, l2)?;
        float_dispatch!(s1, "fused-linear-gated", |F| Ok((
            self.fwd::<F>(slice(s1, l1)?, slice(s2, l2)?, None, d),
            Self::out_shape(&d, l1)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl<A: UnaryFn> CustomOp3 for LinearGatedOp<A> {
    fn name(&self) -> &'static str {
        "fused-linear-gated"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = gated_dims(l1, l2)?;
        if l3.shape().elem_count() != d.out {
            candle_core::bail!("gated linear: bias does not match the stacked weight");
        }
        float_dispatch!(s1, "fused-linear-gated", |F| Ok((
            self.fwd::<F>(slice(s1, l1)?, slice(s2, l2)?, Some(slice(s3, l3)?), d),
            Self::out_shape(&d, l1)
        )))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, Some(b), dy)?;
        Ok((Some(dx), Some(dw), db))
    }
}

struct LinearGatedGrad<A: UnaryFn> {
    bias: bool,
    pre: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    _act: std::marker::PhantomData<A>,
}

impl<A: UnaryFn> CustomOp3 for LinearGatedGrad<A> {
    fn name(&self) -> &'static str {
        "fused-linear-gated-grad"
    }

    /// Output: `[dx (N·in) | dW (2I·in) | db (2I, with a bias)]` as one flat vector.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = gated_dims(l1, l2)?;
        if l3.shape().elem_count() != d.n * d.out / 2 {
            candle_core::bail!("gated linear grad: output gradient has the wrong size");
        }
        let bias = self.bias;
        float_dispatch!(s1, self.name(), |F| {
            let z = self
                .pre
                .downcast_ref::<Vec<F>>()
                .filter(|z| z.len() == d.n * d.out)
                .ok_or_else(|| {
                    candle_core::Error::Msg("gated linear: saved input mismatch".into())
                })?;
            let dz = gate_grad_rows::<F, A>(z, slice(s3, l3)?, d.out / 2);
            Ok(backward::<F>(slice(s1, l1)?, slice(s2, l2)?, &dz, d, bias))
        })
    }
}

/// `act(x Wgᵀ + bg) ⊙ (x Wuᵀ + bu)` for the stacked `w` = [Wg; Wu] (2I, in) and `b` = [bg; bu],
/// fused on the CPU (f32 / f64): the first half of a gated (SwiGLU) MLP.
pub(crate) fn linear_gated<A: UnaryFn>(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = LinearGatedOp::<A> {
        pre: Saved::default(),
        _act: std::marker::PhantomData,
    };
    match b {
        Some(b) => super::segment::apply3(op, &x, &w, &b.contiguous()?),
        None => super::segment::apply2(op, &x, &w),
    }
}
