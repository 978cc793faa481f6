//! Encoder inputs and loading helpers. A BERT encoder is a configuration of the one
//! [`Transformer`](super::Transformer) (post-norm blocks, bidirectional attention, learned
//! positions and token types, an embedding LayerNorm); this module keeps what only encoders use:
//! sequences packed without padding ([`Packed`]), the checkpoint prefix of task models, and the
//! parameter list of a `BertModel` with its pooler.

pub use super::block::BlockDropout;
use super::params::{param_specs_with, ParamSpec};
pub use super::transformer::detect_prefix;
use super::TransformerConfig;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Every parameter of a `BertModel` under `prefix` (e.g. `""` or `"bert."`), pooler included
/// when `pooler`.
pub fn bert_param_specs(cfg: &TransformerConfig, prefix: &str, pooler: bool) -> Vec<ParamSpec> {
    param_specs_with(cfg, prefix, pooler)
}

/// All floating tensors of `dir/model.safetensors` converted to `dtype` (integer buffers such as
/// `position_ids` dropped), and the file's path.
pub fn load_float_tensors(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, std::path::PathBuf)> {
    let st = dir.join("model.safetensors");
    if !st.exists() {
        return Err(Error::checkpoint(
            &st,
            "missing (expected a Hugging Face model directory)",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in crate::weights::safetensors::load_safetensors(&st, device)? {
        if v.dtype().is_float() {
            out.insert(k, v.to_dtype(dtype)?);
        }
    }
    Ok((out, st))
}

/// A batch of token sequences packed end to end without padding: sequence i is rows
/// `offsets[i]..offsets[i + 1]` of the packed (N, ...) tensors.
#[derive(Clone, Debug)]
pub struct Packed {
    /// Token ids (N,) u32.
    pub ids: Tensor,
    /// Position of each token in its sequence (N,) u32.
    pub positions: Tensor,
    /// Token types (N,) u32; none = all 0.
    pub token_types: Option<Tensor>,
    /// B + 1 row offsets.
    pub offsets: std::sync::Arc<[usize]>,
    /// The longest sequence.
    pub max_len: usize,
    ids_host: Vec<u32>,
}

impl Packed {
    /// Pack `seqs` (each non-empty) onto `device`.
    pub fn new(seqs: &[&[u32]], device: &Device) -> Result<Self> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::Input("empty batch or empty sequence".into()));
        }
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        let mut ids = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for s in seqs {
            ids.extend_from_slice(s);
            pos.extend(0..s.len() as u32);
            offsets.push(ids.len());
        }
        Ok(Packed {
            ids: Tensor::from_slice(&ids, n, device)?,
            positions: Tensor::from_vec(pos, n, device)?,
            token_types: None,
            offsets: offsets.into(),
            max_len: seqs.iter().map(|s| s.len()).max().unwrap_or(0),
            ids_host: ids,
        })
    }

    /// With token types (one per token, same layout as the ids).
    pub fn with_token_types(mut self, types: &[&[u32]]) -> Result<Self> {
        let flat: Vec<u32> = types.iter().flat_map(|t| t.iter().copied()).collect();
        if flat.len() != self.ids_host.len() {
            return Err(Error::Input(
                "token types do not match the token ids".into(),
            ));
        }
        self.token_types = Some(Tensor::from_vec(
            flat,
            self.ids_host.len(),
            self.ids.device(),
        )?);
        Ok(self)
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Total tokens N.
    pub fn tokens(&self) -> usize {
        self.ids_host.len()
    }

    /// Row of token `i` of sequence `b`.
    pub fn row(&self, b: usize, i: usize) -> usize {
        self.offsets[b] + i
    }

    /// Length of sequence `b`.
    pub fn len_of(&self, b: usize) -> usize {
        self.offsets[b + 1] - self.offsets[b]
    }

    /// Rows of each sequence's first token (B,) u32.
    pub fn first_rows(&self) -> Result<Tensor> {
        let rows: Vec<u32> = self.offsets[..self.batch()]
            .iter()
            .map(|&o| o as u32)
            .collect();
        Ok(Tensor::from_vec(rows, self.batch(), self.ids.device())?)
    }

    /// Per-sequence mean of packed rows (N, C) -> (B, C) (mean pooling without padding).
    pub fn mean_rows(&self, x: &Tensor) -> Result<Tensor> {
        let mut means = Vec::with_capacity(self.batch());
        for b in 0..self.batch() {
            means.push(
                x.narrow(0, self.offsets[b], self.len_of(b))?
                    .mean_keepdim(0)?,
            );
        }
        Ok(Tensor::cat(&means, 0)?)
    }
}
