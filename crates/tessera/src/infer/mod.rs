//! Fast CPU inference of decoders: the inference backend of the one Transformer.
//!
//! The tensor-engine [`Transformer`](crate::models::Transformer) trains (autograd) and scores
//! batches; this module runs the same configuration on plain slices for generation — weights as
//! [`QMatrix`](crate::kernels::quant::QMatrix)es (GGUF blocks read from the memory map, or f32
//! rows), a preallocated [`KvCache`], threads kept hot across the few hundred small products of a
//! decode step — without a graph or any allocation per token. Its kernels are the crate's one set
//! (`kernels::{norm, rotary, activation, cache_attention, quant}`).

pub mod decoder;

pub use decoder::{Batch, CrossMemory, Decoder, KvCache, Numerics, State};
