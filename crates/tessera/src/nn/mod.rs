//! The Transformer's layers, each a small struct holding its tensors, built from named weights.
//!
//! Every layer here is made of differentiable engine ops, so training gets a gradient for every
//! parameter (the engine's fused norm/softmax/rope kernels have no backward and are not used here).

pub mod attention;
pub mod dropout;
pub mod linear;
pub mod loss;
pub mod mlp;
pub mod norm;
pub mod position;

pub use attention::{Attention, Mixing};
pub use dropout::Dropout;
pub use linear::{Linear, Lora};
pub use mlp::Mlp;
pub use norm::Norm;
pub use position::Rotary;
