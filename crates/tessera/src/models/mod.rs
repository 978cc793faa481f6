//! Model configurations and the Transformer built from them.

pub mod block;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod gguf_loader;
pub mod limits;
pub mod params;

pub use block::{Block, BlockDropout, CrossAttention, Memory, NormPlacement};
pub use config::{Activation, Arch, ModelConfig, NormKind, PositionKind};
pub use decoder::Transformer;
pub use params::ParamStore;
