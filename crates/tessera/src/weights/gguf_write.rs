//! GGUF writer: metadata and tensors into a version 2 or 3 file (the layout [`super::gguf`] reads).

use super::ggml_type::ggml_type_info;
use super::gguf::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::gguf_value::GgufValue;
use crate::{Error, Result};
use std::path::Path;

/// Builds a GGUF image: add metadata and tensors, then [`GgufWriter::to_bytes`] or
/// [`GgufWriter::write`].
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, u32, Vec<u64>, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new(3)
    }
}

impl GgufWriter {
    /// An empty file of format `version` (2 or 3; both have the same layout).
    pub fn new(version: u32) -> Self {
        GgufWriter {
            version,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Add a metadata entry (`general.alignment`, if given, sets the data alignment).
    pub fn kv(mut self, key: impl Into<String>, value: GgufValue) -> Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Add a tensor: `dims` fastest first, `data` already in the ggml type's byte layout.
    pub fn tensor(
        mut self,
        name: impl Into<String>,
        ggml_type: u32,
        dims: &[u64],
        data: Vec<u8>,
    ) -> Self {
        self.tensors
            .push((name.into(), ggml_type, dims.to_vec(), data));
        self
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, v)) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| Error::Input("general.alignment must be a power of two".into())),
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let align = self.alignment()? as usize;
        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for (name, ty, dims, data) in &self.tensors {
            let info = ggml_type_info(*ty)
                .ok_or_else(|| Error::Input(format!("tensor '{name}': unknown ggml type {ty}")))?;
            let want = info
                .tensor_bytes(dims)
                .map_err(|m| Error::Input(format!("tensor '{name}': {m}")))?;
            if want != data.len() as u64 {
                return Err(Error::Input(format!(
                    "tensor '{name}': {} {dims:?} takes {want} bytes, got {}",
                    info.name,
                    data.len()
                )));
            }
            write_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len()).next_multiple_of(align);
        }
        let data_start = out.len().next_multiple_of(align);
        out.resize(data_start, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    /// Write the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::util::fs::write_atomic(path, &self.to_bytes()?)
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => write_str(out, s),
        GgufValue::Array(a) => {
            out.extend_from_slice(&(a.elem_type as u32).to_le_bytes());
            out.extend_from_slice(&(a.items.len() as u64).to_le_bytes());
            for item in &a.items {
                write_value(out, item);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
