//! Dense linear layer `y = x W^T + b`.

use candle_core::{Result, Tensor};

/// A dense projection from `in` to `out` features.
#[derive(Clone, Debug)]
pub struct Linear {
    /// (out, in), or (in, out) when `transposed` (GPT-2's Conv1D layout).
    weight: Tensor,
    /// (out)
    bias: Option<Tensor>,
    transposed: bool,
}

impl Linear {
    /// A layer whose weight is stored (out, in), as `torch.nn.Linear`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            transposed: false,
        }
    }

    /// A layer whose weight is stored (in, out), as GPT-2's `Conv1D`.
    pub fn new_transposed(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            transposed: true,
        }
    }

    /// The weight tensor as stored.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// (..., in) -> (..., out)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let lead: Vec<usize> = dims[..dims.len() - 1].to_vec();
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, in_dim))?; // (N, in)
        let y = if self.transposed {
            x2.matmul(&self.weight)? // (N, out)
        } else {
            x2.matmul(&self.weight.t()?)? // (N, out)
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
