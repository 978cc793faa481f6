//! The checkpoint families: for each, how its Hugging Face `config.json` maps into the one
//! [`TransformerConfig`](super::TransformerConfig) and what its tensors are called. A family is
//! configuration and names only; every family runs the same [`Transformer`](super::Transformer).

pub mod bert;
pub mod gpt2;
pub mod llama;
pub mod marian;
pub mod t5;

use super::config::Arch;

/// Maps (layer index, part) to a tensor-name prefix. Parts: ln1, ln2, qkv, q, k, v, o, fc, proj,
/// gate, up, down; the cross-attention slot's lnx, xq, xk, xv, xo.
pub type LayerNamer = Box<dyn Fn(usize, &str) -> String + Send + Sync>;

/// Tensor names of one family (weights are `{name}.weight`, biases `{name}.bias`, except the
/// embedding tables and the LM head, which are full tensor names).
pub struct Names {
    /// Token embedding table.
    pub wte: String,
    /// Learned position table.
    pub wpe: String,
    /// Token-type (segment) table.
    pub wtt: String,
    /// Norm over the summed embeddings (prefix).
    pub ln_emb: String,
    /// Final norm of a pre-norm model (prefix).
    pub ln_f: String,
    /// Untied LM head.
    pub lm_head: String,
    /// BERT's pooler projection (prefix).
    pub pooler: String,
    /// The relative position bias table (T5's, in the stack's first block; a full tensor name).
    pub rel_bias: String,
    /// Names inside block `i`.
    pub layer: LayerNamer,
    /// Projections stored as Conv1D (in, out) rather than Linear (out, in).
    pub conv1d: bool,
    /// Queries, keys and values stored as one fused projection (`qkv`).
    pub fused_qkv: bool,
}

/// Tensor names of `arch`'s checkpoints, under `prefix` (`""`, or `"bert."` in BERT task
/// checkpoints; Marian: `"model.encoder."` or `"model.decoder."`, the stack; T5: `"encoder."` or
/// `"decoder."`).
pub fn names(arch: Arch, prefix: &str) -> Names {
    match arch {
        Arch::Gpt2 => gpt2::names(),
        Arch::Llama => llama::names(),
        Arch::Bert => bert::names(prefix),
        Arch::Marian => marian::names(prefix),
        Arch::T5 => t5::names(prefix),
    }
}
