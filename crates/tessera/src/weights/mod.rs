//! Weight file formats: GGUF (read and write) and the ggml tensor types it names.

pub mod ggml_type;
pub mod gguf;
pub mod gguf_value;
pub mod gguf_write;

pub use ggml_type::{ggml_type_info, ggml_type_name, GgmlTypeInfo};
pub use gguf::{Gguf, TensorInfo, TensorView};
pub use gguf_value::{GgufArray, GgufValue, ValueType};
pub use gguf_write::GgufWriter;
