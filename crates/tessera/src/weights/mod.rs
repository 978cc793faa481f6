//! Weight file formats: GGUF (read and write) with the ggml tensor types it names, and safetensors.

pub mod ggml_type;
pub mod gguf;
pub mod gguf_value;
pub mod gguf_write;
pub mod safetensors;

pub use ggml_type::{ggml_type_info, ggml_type_name, GgmlTypeInfo};
pub use gguf::{Gguf, TensorInfo, TensorView};
pub use gguf_value::{GgufArray, GgufValue, ValueType};
pub use gguf_write::GgufWriter;
