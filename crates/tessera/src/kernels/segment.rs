//! A residual sublayer as one node of the engine's graph while training.
//!
//! The engine (candle) accumulates every gradient an op returns by adding it to a zero tensor of
//! the input's size, on the calling thread, while the kernel threads wait: a pre-norm sublayer
//! `x + f(norm(x))` made of the fused ops returns five activation-sized gradients and a weight
//! gradient per op, each paid for that way (about 15% of a training step, BENCHMARKS.md).
//!
//! A *segment* runs the same sublayer code, but while it records, the fused ops run outside the
//! graph (on the detached input) and write down what their backward passes need. One op,
//! [`residual`]'s `x + branch`, joins the graph; its backward walks the recorded ops in reverse,
//! hands each op's input gradient straight to the op before it, sums the two gradients of `x`
//! (the branch's and the residual's) in one parallel pass, and leaves the weights' gradients in
//! the [`Sink`] that the training loop installed: [`Sink::drain_into`] puts them into the
//! engine's gradient store after the backward pass. The engine then sees one gradient per
//! sublayer (that of `x`) instead of a dozen.
//!
//! Segments run only while a [`Sink`] is installed (the training loop), for sublayers whose
//! every op is one of the fused kernels (the block checks before it starts one); an op outside
//! them inside a segment is an error, never a silently missing gradient. The numbers are the
//! ones the graph computes: the same kernels on the same inputs, and the two gradients of `x`
//! summed once (the engine sums the same two).

use super::{float_dispatch, new_rows, slice, Float};
use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, TensorId, WithDType,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// (d input, d weight, d bias) of a fused op.
pub(crate) type Grads = (Tensor, Tensor, Option<Tensor>);

/// The backward pass of a fused op with an input, a weight and an optional bias.
pub(crate) trait Backward: Send + Sync {
    /// The gradients for the output gradient `dy`.
    fn grads(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, dy: &Tensor) -> Result<Grads>;
}

/// One recorded op: its backward, its inputs, its output's id.
struct Step {
    op: Box<dyn Backward>,
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    y: TensorId,
}

/// What a recording segment has seen so far.
#[derive(Default)]
struct Recording {
    steps: Vec<Step>,
    /// Weights stacked by [`stack_rows`]: the stack's id -> its parts (tensor, rows).
    stacks: HashMap<TensorId, Vec<(Tensor, usize)>>,
}

thread_local! {
    static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
    static SINK: RefCell<Option<Arc<Sink>>> = const { RefCell::new(None) };
}

/// Whether a segment is recording on this thread.
fn recording() -> bool {
    RECORDING.with(|r| r.borrow().is_some())
}

/// Whether sublayers may run as segments: a [`Sink`] is installed on this thread.
pub fn active() -> bool {
    SINK.with(|s| s.borrow().is_some())
}

/// Apply a fused op with an input and a weight: into the graph, or (while a segment records)
/// outside it, recorded for the segment's backward pass.
pub(crate) fn apply2<Op: CustomOp2 + Backward + 'static>(
    op: Op,
    x: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    if !recording() {
        return x.apply_op2(w, op);
    }
    let y = x.apply_op2_no_bwd(w, &op)?;
    record(Box::new(op), x, w, None, &y);
    Ok(y)
}

/// [`apply2`] with a bias.
pub(crate) fn apply3<Op: CustomOp3 + Backward + 'static>(
    op: Op,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
) -> Result<Tensor> {
    if !recording() {
        return x.apply_op3(w, b, op);
    }
    let y = x.apply_op3_no_bwd(w, b, &op)?;
    record(Box::new(op), x, w, Some(b), &y);
    Ok(y)
}

fn record(op: Box<dyn Backward>, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor) {
    RECORDING.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            rec.steps.push(Step {
                op,
                x: x.clone(),
                w: w.clone(),
                b: b.cloned(),
                y: y.id(),
            });
        }
    });
}

/// `parts` stacked along their first dimension (q, k, v projections; gate over up). While a
/// segment records, the stack is made of the parts outside the graph and remembered, so that
/// its gradient goes back to the parts by rows.
pub fn stack_rows(parts: &[&Tensor]) -> Result<Tensor> {
    if !recording() {
        return Tensor::cat(parts, 0);
    }
    let detached: Vec<Tensor> = parts.iter().map(|p| p.detach()).collect();
    let stack = Tensor::cat(&detached, 0)?;
    let rows = parts
        .iter()
        .map(|p| ((*p).clone(), p.dims().first().copied().unwrap_or(0)))
        .collect();
    RECORDING.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            rec.stacks.insert(stack.id(), rows);
        }
    });
    Ok(stack)
}

/// Where segments leave the weights' gradients until the backward pass is over.
#[derive(Default)]
pub struct Sink {
    grads: Mutex<Vec<(Tensor, Tensor)>>,
}

/// The installed [`Sink`] of this thread; uninstalled when dropped.
pub struct SinkGuard {
    sink: Arc<Sink>,
}

impl Sink {
    /// Let sublayers run as segments on this thread until the guard is dropped (or drained).
    pub fn install() -> SinkGuard {
        let sink = Arc::new(Sink::default());
        SINK.with(|s| *s.borrow_mut() = Some(sink.clone()));
        SinkGuard { sink }
    }

    fn push(&self, param: &Tensor, grad: Tensor) {
        if let Ok(mut g) = self.grads.lock() {
            g.push((param.clone(), grad));
        }
    }
}

impl SinkGuard {
    /// Put the weights' gradients left by the segments into `store` (added to a gradient the
    /// engine found for the same tensor), and uninstall the sink.
    pub fn drain_into(self, store: &mut GradStore) -> Result<()> {
        let grads = match self.sink.grads.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(_) => candle_core::bail!("segment: the gradient sink was poisoned"),
        };
        for (param, grad) in grads {
            let sum = match store.get(&param) {
                Some(old) => (old + &grad)?,
                None => grad,
            };
            store.insert(&param, sum);
        }
        Ok(())
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        SINK.with(|s| {
            let mut s = s.borrow_mut();
            if s.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.sink)) {
                *s = None;
            }
        });
    }
}

/// Ends the recording when dropped (also when the sublayer fails).
struct RecordingGuard;

impl Drop for RecordingGuard {
    fn drop(&mut self) {
        RECORDING.with(|r| *r.borrow_mut() = None);
    }
}

/// `x + branch(x)` as one node of the graph, `branch` run as a segment (see the module's
/// documentation). Every op of `branch` must be one of the fused kernels applied through
/// [`apply2`] / [`apply3`], in a chain from its input to its output; anything else is an error.
pub fn residual<E: From<candle_core::Error>>(
    x: &Tensor,
    branch: impl FnOnce(&Tensor) -> std::result::Result<Tensor, E>,
) -> std::result::Result<Tensor, E> {
    let fail = |m: &str| E::from(candle_core::Error::Msg(format!("segment: {m}")));
    let Some(sink) = SINK.with(|s| s.borrow().clone()) else {
        return Err(fail("no gradient sink installed"));
    };
    if recording() {
        return Err(fail("segments do not nest"));
    }
    let x = x.contiguous()?;
    let xd = x.detach();
    let (out, rec) = {
        RECORDING.with(|r| *r.borrow_mut() = Some(Recording::default()));
        let _end = RecordingGuard;
        let out = branch(&xd)?;
        let rec = RECORDING
            .with(|r| r.borrow_mut().take())
            .unwrap_or_default();
        (out, rec)
    };
    // The ops must form a chain xd -> ... -> out.
    let mut at = xd.id();
    for s in &rec.steps {
        if s.x.id() != at {
            return Err(fail(
                "an op outside the fused kernels ran inside a sublayer (a bug: the block should \
                 not have started a segment)",
            ));
        }
        at = s.y;
    }
    if rec.steps.is_empty() || at != out.id() || out.dims() != x.dims() {
        return Err(fail("the sublayer's output is not its last fused op's"));
    }
    let attach = Attach {
        steps: rec.steps,
        stacks: rec.stacks,
        sink,
    };
    Ok(x.apply_op2(&out, attach)?)
}

/// The graph node of a segment: `x + branch` forward; the segment's backward.
struct Attach {
    steps: Vec<Step>,
    stacks: HashMap<TensorId, Vec<(Tensor, usize)>>,
    sink: Arc<Sink>,
}

impl Attach {
    /// A weight's gradient to the sink, split by rows when the weight was a stack.
    fn give(&self, w: &Tensor, dw: Tensor) -> Result<()> {
        match self.stacks.get(&w.id()) {
            Some(parts) => {
                let mut r0 = 0;
                for (p, rows) in parts {
                    self.sink.push(p, dw.narrow(0, r0, *rows)?);
                    r0 += rows;
                }
            }
            None => self.sink.push(w, dw),
        }
        Ok(())
    }
}

impl CustomOp2 for Attach {
    fn name(&self) -> &'static str {
        "segment-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Sum.cpu_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _branch: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut d = dy.contiguous()?;
        for s in self.steps.iter().rev() {
            let (dx, dw, db) = s.op.grads(&s.x, &s.w, s.b.as_ref(), &d)?;
            self.give(&s.w, dw)?;
            if let (Some(b), Some(db)) = (&s.b, db) {
                self.give(b, db)?;
            }
            d = dx;
        }
        // x's two gradients: through the branch (d) and around it (dy).
        let dx = dy.contiguous()?.apply_op2_no_bwd(&d.contiguous()?, &Sum)?;
        Ok((Some(dx), None))
    }
}

/// `a + b` element-wise (same shapes), rows in parallel.
struct Sum;

impl CustomOp2 for Sum {
    fn name(&self) -> &'static str {
        "segment-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("segment: the two summed tensors differ in shape");
        }
        let c = l1.shape().dims().last().copied().unwrap_or(1);
        float_dispatch!(s1, self.name(), |F| Ok((
            F::to_cpu_storage_owned(sum::<F>(slice(s1, l1)?, slice(s2, l2)?, c)),
            l1.shape().clone()
        )))
    }
}

fn sum<F: Float>(a: &[F], b: &[F], c: usize) -> Vec<F> {
    new_rows(a.len(), c.max(1), |i, out| {
        let at = i * out.len();
        for ((o, &x), &y) in out.iter_mut().zip(&a[at..]).zip(&b[at..]) {
            *o = x + y;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn a_sublayer_outside_the_fused_kernels_is_refused() {
        let x = Var::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let w = Var::new(&[[0.5f32, -1.0], [2.0, 0.25]], &Device::Cpu).unwrap();
        // No sink: no segment.
        assert!(residual(x.as_tensor(), |h| Ok::<_, candle_core::Error>(h.clone())).is_err());
        let sink = Sink::install();
        // An engine op in the branch, or no op at all: an error, not a lost gradient.
        assert!(residual(x.as_tensor(), |h| h * 2.0).is_err());
        assert!(residual(x.as_tensor(), |h| Ok::<_, candle_core::Error>(h.clone())).is_err());
        // A fused op: x + x Wᵀ, with the graph's gradients.
        let y = residual(x.as_tensor(), |h| {
            super::super::linear::linear(h, w.as_tensor(), None, false)
        })
        .unwrap();
        let mut g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(w.as_tensor()).is_none());
        sink.drain_into(&mut g).unwrap();
        let reference = (x.as_tensor()
            + super::super::linear::linear(x.as_tensor(), w.as_tensor(), None, false).unwrap())
        .unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            reference.to_vec2::<f32>().unwrap()
        );
        let r = reference.sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            assert_eq!(
                g.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap(),
                r.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap()
            );
        }
    }
}
