//! Fast CPU inference of pretrained decoders on their quantized weights.
//!
//! The tensor-engine [`Transformer`](crate::models::Transformer) trains and evaluates in f32; this
//! module runs a GGUF model the way llama.cpp does — weights kept in their block formats and read
//! from the memory map, 8-bit activations, integer dot products, a preallocated KV cache, threads
//! kept hot across the few hundred small products of a decode step — without a graph or any
//! allocation per token.
//!
//! - [`ops`]: RMSNorm, rotary embedding, SwiGLU, softmax, attention over the cache.
//! - [`QuantLlama`]: the Llama-family model and its [`State`] (KV cache and scratch).

pub mod llama;

pub use llama::{QuantLlama, State};
