//! Linear layer `y = x W^T + b`: dense (trainable), or with W kept in a quantized GGML format
//! (inference only: a backward pass through it is an error, never a missing gradient), or frozen
//! in a GGML format for training around it (LoRA on a quantized base: the arithmetic of the
//! dequantized weight, gradients to the input only). Any of them may carry a LoRA adapter:
//! `y = x W^T + b + s · (x A^T) B^T`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

use crate::kernels::activation::Activation;
use crate::kernels::quant::QMatrix;

#[derive(Clone, Debug)]
enum Kind {
    /// (out, in), or (in, out) when `transposed` (GPT-2's Conv1D layout).
    Dense { weight: Tensor, transposed: bool },
    /// (out, in) in a block format, and an empty (0, in) f32 tensor for [`Linear::weight`].
    Quantized { w: Arc<QMatrix>, empty: Tensor },
    /// (out, in) in a block format, multiplied as its dequantized f32 values (forward and
    /// backward); never trained.
    Frozen { w: Arc<QMatrix>, empty: Tensor },
}

/// A low-rank adapter on a linear layer: `Δy = scale · (x Aᵀ) Bᵀ` (PEFT's `lora_A`, `lora_B`).
#[derive(Clone, Debug)]
pub struct Lora {
    /// (r, in)
    pub a: Tensor,
    /// (out, r)
    pub b: Tensor,
    /// alpha / r
    pub scale: f64,
}

/// A projection from `in` to `out` features.
#[derive(Clone, Debug)]
pub struct Linear {
    kind: Kind,
    /// (out)
    bias: Option<Tensor>,
    lora: Option<Lora>,
}

impl Linear {
    /// A layer whose weight is stored (out, in), as `torch.nn.Linear`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            kind: Kind::Dense {
                weight,
                transposed: false,
            },
            bias,
            lora: None,
        }
    }

    /// A layer whose weight is stored (in, out), as GPT-2's `Conv1D`.
    pub fn new_transposed(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            kind: Kind::Dense {
                weight,
                transposed: true,
            },
            bias,
            lora: None,
        }
    }

    /// An inference-only layer over a quantized (out, in) weight: the forward pass runs the
    /// quantized kernels on CPU f32 inputs; a backward pass through it is an error.
    pub fn quantized(w: QMatrix, bias: Option<Tensor>) -> Result<Self> {
        let empty = Tensor::zeros((0, w.cols()), DType::F32, &Device::Cpu)?;
        Ok(Linear {
            kind: Kind::Quantized {
                w: Arc::new(w),
                empty,
            },
            bias,
            lora: None,
        })
    }

    /// A layer over a frozen quantized (out, in) weight that training passes through: products
    /// with the dequantized f32 values (rebuilt per product, so only the blocks stay in memory),
    /// gradients to the input (exact to the dequantized dense layer), none to the weight.
    pub fn frozen(w: Arc<QMatrix>, bias: Option<Tensor>) -> Result<Self> {
        let empty = Tensor::zeros((0, w.cols()), DType::F32, &Device::Cpu)?;
        Ok(Linear {
            kind: Kind::Frozen { w, empty },
            bias,
            lora: None,
        })
    }

    /// This layer with a LoRA adapter added (replacing any it had).
    pub fn with_lora(mut self, lora: Lora) -> Self {
        self.lora = Some(lora);
        self
    }

    /// The layer's LoRA adapter, if it has one.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// (out, in) and the weight's dimensions as the input/output features.
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match &self.kind {
            Kind::Dense {
                weight,
                transposed: false,
            } => weight.dims2()?,
            Kind::Dense { weight, .. } => {
                let (i, o) = weight.dims2()?;
                (o, i)
            }
            Kind::Quantized { w, .. } | Kind::Frozen { w, .. } => (w.rows(), w.cols()),
        })
    }

    /// The weight tensor as stored; for a quantized layer, an empty (0, in) tensor (see
    /// [`Linear::qmatrix`]).
    pub fn weight(&self) -> &Tensor {
        match &self.kind {
            Kind::Dense { weight, .. } => weight,
            Kind::Quantized { empty, .. } | Kind::Frozen { empty, .. } => empty,
        }
    }

    /// The bias, when the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The quantized weight, for a quantized layer.
    pub fn qmatrix(&self) -> Option<&QMatrix> {
        match &self.kind {
            Kind::Quantized { w, .. } | Kind::Frozen { w, .. } => Some(w),
            Kind::Dense { .. } => None,
        }
    }

    /// (..., in) -> (..., out)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Kind::Frozen { w, .. }, Some(l), None) = (&self.kind, &self.lora, &self.bias) {
            if x.device().is_cpu() && x.dtype() == DType::F32 && l.a.dtype() == DType::F32 {
                // Base product and adapter as one op: one output tensor in the graph.
                return frozen_lora_forward(w, l, x);
            }
        }
        let y = match self.dense_fusable(x) {
            Some((weight, transposed)) => {
                crate::kernels::linear::linear(x, weight, self.bias.as_ref(), transposed)?
            }
            None => self.forward_reference(x)?,
        };
        self.add_lora(x, y)
    }

    /// `y + s · (x Aᵀ) Bᵀ` when the layer has an adapter; `y` otherwise.
    fn add_lora(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let Some(l) = &self.lora else {
            return Ok(y);
        };
        let lin = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            if crate::kernels::applicable(x) && w.dtype() == x.dtype() && w.device().is_cpu() {
                crate::kernels::linear::linear(x, w, None, false)
            } else {
                Linear::new(w.clone(), None).forward_reference(x)
            }
        };
        // The scale on the rank-r intermediate: r values per row instead of `out`.
        let down = (lin(x, &l.a)? * l.scale)?; // (..., r)
        y + lin(&down, &l.b)? // (..., out)
    }

    /// `act(self.forward(x))`: (..., in) -> (..., out). GELU (both forms) runs fused into the
    /// layer where [`Linear::forward`] would take the fused kernel (one op; the backward forms
    /// `act'(z) ⊙ dy` from the kept pre-activation z); otherwise the two steps.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        use crate::kernels::linear::{linear_gelu_erf, linear_gelu_tanh};
        if let Some((weight, transposed)) = self.act_fusable(x, act) {
            let fused = match act {
                Activation::GeluTanh => linear_gelu_tanh,
                _ => linear_gelu_erf,
            };
            return fused(x, weight, self.bias.as_ref(), transposed);
        }
        super::mlp::activate(&self.forward(x)?, act)
    }

    /// [`Linear::fusable`] when [`Linear::forward_act`] fuses `act` into the product (GELU, both
    /// forms).
    pub(crate) fn act_fusable(&self, x: &Tensor, act: Activation) -> Option<(&Tensor, bool)> {
        match act {
            Activation::GeluTanh | Activation::Gelu => self.fusable(x),
            Activation::Silu | Activation::Relu => None,
        }
    }

    /// The dense weight and its layout (`true`: stored (in, out)), when the fused CPU kernels
    /// apply to `x` and this layer (not with an adapter: callers fusing the weight into a
    /// larger op would leave it out).
    pub(crate) fn fusable(&self, x: &Tensor) -> Option<(&Tensor, bool)> {
        if self.lora.is_some() {
            return None;
        }
        self.dense_fusable(x)
    }

    /// [`Linear::fusable`] for the base weight alone.
    fn dense_fusable(&self, x: &Tensor) -> Option<(&Tensor, bool)> {
        if let Kind::Dense { weight, transposed } = &self.kind {
            let same = |t: &Tensor| t.dtype() == x.dtype() && t.device().is_cpu();
            if crate::kernels::applicable(x)
                && x.rank() > 0
                && same(weight)
                && self.bias.as_ref().is_none_or(same)
            {
                return Some((weight, *transposed));
            }
        }
        None
    }

    /// The same layer from engine primitives (matrix product, then a broadcast bias add); any
    /// device and dtype.
    pub fn forward_reference(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.is_empty() {
            candle_core::bail!("linear: input is a scalar");
        }
        let in_dim = dims[dims.len() - 1];
        let lead: Vec<usize> = dims[..dims.len() - 1].to_vec();
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, in_dim))?; // (N, in)
        let y = match &self.kind {
            Kind::Dense {
                weight,
                transposed: true,
            } => x2.matmul(weight)?, // (N, out)
            Kind::Dense { weight, .. } => x2.matmul(&weight.t()?)?, // (N, out)
            Kind::Quantized { w, .. } => quantized_forward(w, &x2)?, // (N, out)
            Kind::Frozen { w, .. } => frozen_forward(w, &x2)?,      // (N, out)
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let out_dim = y.dim(1)?;
        let mut shape = lead;
        shape.push(out_dim);
        y.reshape(shape)
    }
}

/// (N, in) -> (N, out) through the quantized kernels.
fn quantized_forward(w: &Arc<QMatrix>, x: &Tensor) -> Result<Tensor> {
    check_block_input("quantized", w, x)?;
    x.contiguous()?.apply_op1(QLinearOp { w: w.clone() })
}

/// (N, in) -> (N, out) through a frozen block-format weight, in f32.
fn frozen_forward(w: &Arc<QMatrix>, x: &Tensor) -> Result<Tensor> {
    check_block_input("frozen", w, x)?;
    x.contiguous()?.apply_op1(FrozenOp {
        w: w.clone(),
        transpose: false,
    })
}

/// A block-format weight's products run on the CPU in f32, on inputs (..., in).
fn check_block_input(kind: &str, w: &QMatrix, x: &Tensor) -> Result<()> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        candle_core::bail!(
            "{kind} linear ({} {}x{}) runs on the CPU in f32; got {:?} on {:?}",
            w.qtype(),
            w.rows(),
            w.cols(),
            x.dtype(),
            x.device()
        );
    }
    let in_dim = x.dims().last().copied().unwrap_or(0);
    if in_dim != w.cols() {
        candle_core::bail!(
            "{kind} linear: input has {in_dim} features, the weight {}",
            w.cols()
        );
    }
    Ok(())
}

/// `x Wᵀ + s (x Aᵀ) Bᵀ` for x (..., in) with W frozen in a block format: one op (the base
/// output, the adapter's and their sum are one tensor, not three kept for the backward pass).
fn frozen_lora_forward(w: &Arc<QMatrix>, l: &Lora, x: &Tensor) -> Result<Tensor> {
    check_block_input("frozen", w, x)?;
    let dims = x.dims().to_vec();
    let in_dim = w.cols();
    let rows = x.elem_count() / in_dim.max(1);
    let y = x.reshape((rows, in_dim))?.contiguous()?.apply_op3(
        &l.a.contiguous()?,
        &l.b.contiguous()?,
        FrozenLoraOp {
            w: w.clone(),
            scale: l.scale,
        },
    )?;
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = w.rows();
    }
    y.reshape(shape)
}

/// Forward of [`frozen_lora_forward`]: inputs x (N, in), A (r, in), B (out, r).
struct FrozenLoraOp {
    w: Arc<QMatrix>,
    scale: f64,
}

impl candle_core::CustomOp3 for FrozenLoraOp {
    fn name(&self) -> &'static str {
        "frozen-quantized-linear-lora"
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
        use crate::kernels::matmul::{filled, gemm, View};
        let (x, a, b) = (
            crate::kernels::slice::<f32>(s1, l1)?,
            crate::kernels::slice::<f32>(s2, l2)?,
            crate::kernels::slice::<f32>(s3, l3)?,
        );
        let (n, k) = l1.shape().dims2()?;
        let (r, ka) = l2.shape().dims2()?;
        let (out, rb) = l3.shape().dims2()?;
        if k != self.w.cols() || ka != k || rb != r || out != self.w.rows() {
            candle_core::bail!(
                "frozen LoRA linear: x {:?}, A {:?}, B {:?} for a {}x{} weight",
                l1.shape(),
                l2.shape(),
                l3.shape(),
                self.w.rows(),
                self.w.cols()
            );
        }
        let w = self.w.dequantize_par(); // (out, k)
                                         // t = s · x Aᵀ (n × r)
        let mut t = vec![0f32; n * r];
        // SAFETY: x holds n·k values, A r·k, t n·r; the product writes all of t.
        unsafe {
            gemm(
                (n, r, k),
                t.as_mut_ptr(),
                r,
                false,
                View::rows(x, 0, k),
                View::cols(a, 0, k),
                true,
            )
        };
        let s = self.scale as f32;
        t.iter_mut().for_each(|v| *v *= s);
        // SAFETY: the first product writes all n·out outputs, the second adds onto them.
        let y = unsafe {
            filled(n * out, |y: *mut f32| {
                gemm(
                    (n, out, k),
                    y,
                    out,
                    false,
                    View::rows(x, 0, k),
                    View::cols(&w, 0, k),
                    true,
                );
                if r > 0 {
                    gemm(
                        (n, out, r),
                        y,
                        out,
                        true,
                        View::rows(&t, 0, r),
                        View::cols(b, 0, r),
                        true,
                    );
                }
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // u = s · dy B (n × r); dx = dy W + u A; dA = uᵀ x; dB = s · dyᵀ (x Aᵀ).
        let u = (dy.matmul(b)? * self.scale)?;
        let dx = (dy.apply_op1(FrozenOp {
            w: self.w.clone(),
            transpose: true,
        })? + u.matmul(a)?)?;
        let da = u.t()?.matmul(x)?;
        let t = (x.matmul(&a.t()?)? * self.scale)?;
        let db = dy.t()?.matmul(&t)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

/// `x Wᵀ` (or `x W` when `transpose`: the backward product) with W dequantized for the product.
struct FrozenOp {
    w: Arc<QMatrix>,
    transpose: bool,
}

impl CustomOp1 for FrozenOp {
    fn name(&self) -> &'static str {
        "frozen-quantized-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        use crate::kernels::matmul::{filled, gemm, View};
        let x = crate::kernels::slice::<f32>(s, l)?;
        let (n, k) = l.shape().dims2()?;
        let (rows, cols) = (self.w.rows(), self.w.cols());
        let (want, out) = if self.transpose {
            (rows, cols)
        } else {
            (cols, rows)
        };
        if k != want {
            candle_core::bail!("frozen linear: input has {k} features, expected {want}");
        }
        let w = self.w.dequantize_par(); // (rows, cols)
        let wv = if self.transpose {
            View::rows(&w, 0, cols) // (rows × cols) = (k × out)
        } else {
            View::cols(&w, 0, cols) // Wᵀ: (cols × rows) = (k × out)
        };
        // SAFETY: x holds n·k values, w rows·cols; the product writes all n·out outputs.
        let y = unsafe {
            filled(n * out, |y: *mut f32| {
                gemm((n, out, k), y, out, false, View::rows(x, 0, k), wv, true)
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d(x Wᵀ)/dx applied to dy is dy W, and the other way round.
        let g = grad.contiguous()?.apply_op1(FrozenOp {
            w: self.w.clone(),
            transpose: !self.transpose,
        })?;
        Ok(Some(g))
    }
}

/// `x W^T` as an engine op, so that a backward pass through it fails with a clear error.
struct QLinearOp {
    w: Arc<QMatrix>,
}

impl CustomOp1 for QLinearOp {
    fn name(&self) -> &'static str {
        "quantized-linear (inference only, no backward)"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::kernels::slice::<f32>(s, l)?;
        let (n, _) = l.shape().dims2()?;
        let mut out = vec![0f32; n * self.w.rows()];
        self.w
            .matmul(x, n, &mut out)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(out), Shape::from((n, self.w.rows()))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Option<Tensor>> {
        candle_core::bail!(
            "quantized linear ({} {}x{}) is inference-only: it has no backward pass; train \
             with dense weights",
            self.w.qtype(),
            self.w.rows(),
            self.w.cols()
        )
    }
}
