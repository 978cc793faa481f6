//! LayerNorm and RMSNorm over the last dimension, from differentiable primitives.

use candle_core::{DType, Result, Tensor, D};

/// A normalization layer.
#[derive(Clone, Debug)]
pub enum Norm {
    /// `(x - mean) / sqrt(var + eps) * weight + bias`
    LayerNorm {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
    },
    /// `x / sqrt(mean(x^2) + eps) * weight`
    RmsNorm { weight: Tensor, eps: f64 },
}

impl Norm {
    /// (..., C) -> (..., C)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if crate::kernels::applicable(x) {
            return match self {
                Norm::LayerNorm { weight, bias, eps } => {
                    crate::kernels::norm::layer_norm(x, weight, bias, *eps)
                }
                Norm::RmsNorm { weight, eps } => crate::kernels::norm::rms_norm(x, weight, *eps),
            };
        }
        self.forward_reference(x)
    }

    /// The same normalization from engine primitives (any device and dtype).
    pub fn forward_reference(&self, x: &Tensor) -> Result<Tensor> {
        // Half-precision inputs are normalized in f32, as the reference implementations do.
        let in_dtype = x.dtype();
        let xf = if matches!(in_dtype, DType::F16 | DType::BF16) {
            x.to_dtype(DType::F32)?
        } else {
            x.clone()
        };
        let y = match self {
            Norm::LayerNorm { weight, bias, eps } => {
                let mean = xf.mean_keepdim(D::Minus1)?; // (..., 1)
                let xc = xf.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?; // (..., 1)
                let inv = (var + *eps)?.sqrt()?.recip()?;
                xc.broadcast_mul(&inv)?
                    .to_dtype(in_dtype)?
                    .broadcast_mul(weight)?
                    .broadcast_add(bias)?
            }
            Norm::RmsNorm { weight, eps } => {
                let ms = xf.sqr()?.mean_keepdim(D::Minus1)?; // (..., 1)
                let inv = (ms + *eps)?.sqrt()?.recip()?;
                xf.broadcast_mul(&inv)?
                    .to_dtype(in_dtype)?
                    .broadcast_mul(weight)?
            }
        };
        Ok(y)
    }
}
