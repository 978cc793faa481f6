//! The one Transformer, its configuration, and the checkpoint families that configure it.

pub mod block;
pub mod config;
pub mod encoder;
pub mod family;
pub mod gguf_loader;
pub mod gguf_merge;
pub mod limits;
pub mod lora;
pub mod params;
pub mod seq2seq;
pub mod transformer;

pub use block::{Block, BlockDropout, CrossAttention, Memory, NormPlacement};
pub use config::{
    Activation, Arch, AttentionKind, HfConfig, NormKind, PositionKind, TransformerConfig,
};
pub use params::ParamStore;
pub use seq2seq::{Seq2Seq, Seq2SeqBatch, Seq2SeqConfig};
pub use transformer::Transformer;
