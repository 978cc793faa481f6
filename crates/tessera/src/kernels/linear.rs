//! Dense linear layer `y = x M + b` as one op with its backward (M = Wᵀ for a `torch.nn.Linear`
//! weight W (out, in), M = W for GPT-2's `Conv1D` weight (in, out)).
//!
//! Forward: the output rows start as copies of b and the matrix product accumulates onto them
//! (no separate broadcast add). Backward, one op writing `[dx | dW | db]` into one buffer:
//!   dx = dy Mᵀ,   dM = xᵀ dy,   db = Σ_rows dy
//! The products read the weight in its stored layout (no transposed copies). The reference is the
//! composition of engine ops in `nn::Linear::forward_reference`.

use super::matmul::{filled, gemm, View};
use super::{float_dispatch, slice, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

#[derive(Clone, Copy)]
struct Dims {
    /// Rows of x (all leading dimensions).
    n: usize,
    inp: usize,
    out: usize,
    /// Weight stored (in, out).
    transposed: bool,
}

impl Dims {
    fn of(x: &Layout, w: &Layout, transposed: bool) -> Result<Dims> {
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
    // SAFETY: x is (n, in) row-major, w holds in·out elements, y is (n, out). Every element of y
    // is written: with a bias, rows of b first, then the product adds onto them; without one, the
    // product writes them all (zeroing them when in = 0).
    let y = unsafe {
        filled(d.n * d.out, |y: *mut F| {
            if let Some(b) = b {
                for i in 0..d.n {
                    std::ptr::copy_nonoverlapping(b.as_ptr(), y.add(i * d.out), d.out);
                }
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
    };
    F::to_cpu_storage_owned(y)
}

fn backward<F: Float>(x: &[F], w: &[F], dy: &[F], d: Dims, bias: bool) -> (CpuStorage, Shape) {
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
                db.fill(F::zero());
                for row in dy.chunks(out.max(1)) {
                    for (s, &g) in db.iter_mut().zip(row) {
                        *s += g;
                    }
                }
            }
        })
    };
    (F::to_cpu_storage_owned(all), Shape::from(len))
}

struct LinearOp {
    transposed: bool,
}

impl LinearOp {
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let grad = LinearGrad {
            transposed: self.transposed,
            bias: b.is_some(),
        };
        let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &grad)?; // [dx | dW | db]
        let (nx, nw) = (x.elem_count(), w.elem_count());
        let dx = all.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = all.narrow(0, nx, nw)?.reshape(w.shape())?;
        let db = match b {
            Some(b) => Some(all.narrow(0, nx + nw, b.elem_count())?),
            None => None,
        };
        Ok((dx, dw, db))
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
        let d = Dims::of(l1, l2, self.transposed)?;
        if l3.shape().elem_count() != d.out {
            candle_core::bail!(
                "linear: bias has {} elements, the output {}",
                l3.shape().elem_count(),
                d.out
            );
        }
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
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}
