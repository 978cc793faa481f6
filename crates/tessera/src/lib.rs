//! tessera: tokenizers, one configurable Transformer, training and generation.
//!
//! Shape legend used in comments throughout: B batch, T time (sequence), C channels (hidden size),
//! H attention heads, Hkv key/value heads, D head size, V vocabulary, I intermediate (MLP) size.

// Every `unsafe` block states why it is sound (clippy checks it in CI, with `-D warnings`).
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod dist;
pub mod error;
pub mod generate;
pub mod hub;
pub mod infer;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod tasks;
pub mod tokenizer;
pub mod train;
pub mod util;
pub mod weights;

pub use candle_core::{DType, Device, Tensor};
pub use error::{Error, Result};
