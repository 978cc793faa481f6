//! GGUF reader (versions 2 and 3, little-endian): header, metadata, tensor infos, tensor data.
//!
//! ```text
//! magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv × (key: string, type: u32, value)              string = len u64 + UTF-8 bytes
//! n_tensors × (name: string, n_dims u32, dims n_dims × u64, ggml type u32, offset u64)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor at data_start + offset (a multiple of the alignment)
//! ```
//!
//! Every count, length, offset and dimension is checked before it is used: a truncated or corrupt
//! file gives [`Error::Gguf`] naming the field, and allocations are bounded by the file's size.
//! Data is memory-mapped; [`TensorView::data`] borrows the bytes without copying.

use super::ggml_type::{ggml_type_info, ggml_type_name};
use super::gguf_value::{GgufArray, GgufValue, ValueType};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file's first four bytes.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (as in ggml).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays inside arrays that the reader accepts.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Where tensor info `name` points in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`, ...).
    pub name: String,
    /// ggml type id (see [`super::ggml_type`]).
    pub ggml_type: u32,
    /// Dimensions, first (fastest-varying) first, as GGUF stores them: a (rows, cols) matrix
    /// is `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Byte length of the data.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Number of elements (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A tensor's name, type, dimensions and bytes, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// ggml type id.
    pub ggml_type: u32,
    /// Dimensions, fastest first (GGUF order).
    pub dims: &'a [u64],
    /// The raw (possibly quantized) bytes.
    pub data: &'a [u8],
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file.
pub struct Gguf {
    path: PathBuf,
    bytes: std::sync::Arc<Bytes>,
    version: u32,
    alignment: u64,
    data_start: usize,
    metadata: Vec<(String, GgufValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gguf({}, v{}, {} keys, {} tensors)",
            self.path.display(),
            self.version,
            self.metadata.len(),
            self.tensors.len()
        )
    }
}

/// Byte cursor over the file; every read is bounds-checked and names what it was reading.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {} needs {n} bytes at offset {}, but the file ends at {}",
                what(),
                self.pos,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], String> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed UTF-8 string.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let len = self.u64(&|| format!("{} length", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            format!(
                "{} is not valid UTF-8 (bad byte at offset {})",
                what(),
                self.pos - bytes.len() + e.utf8_error().valid_up_to()
            )
        })
    }

    /// A count of items that each take at least `min_bytes`; bounded by the bytes left.
    fn count(&mut self, min_bytes: u64, what: &dyn Fn() -> String) -> Result<usize, String> {
        let n = self.u64(what)?;
        match n.checked_mul(min_bytes) {
            Some(need) if need <= self.remaining() => Ok(n as usize),
            _ => Err(format!(
                "truncated or corrupt: {} is {n}, more than the {} bytes left in the file can hold",
                what(),
                self.remaining()
            )),
        }
    }

    fn value(
        &mut self,
        ty: ValueType,
        depth: usize,
        what: &dyn Fn() -> String,
    ) -> Result<GgufValue, String> {
        Ok(match ty {
            ValueType::U8 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => GgufValue::U32(self.u32(what)?),
            ValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => GgufValue::U64(self.u64(what)?),
            ValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(format!(
                        "{} is a bool with byte value {b} (expected 0 or 1)",
                        what()
                    ))
                }
            },
            ValueType::String => GgufValue::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "{} nests arrays deeper than {MAX_ARRAY_DEPTH} levels",
                        what()
                    ));
                }
                let id = self.u32(&|| format!("{} element type", what()))?;
                let elem_type = ValueType::from_id(id)
                    .ok_or_else(|| format!("{} has unknown element type {id}", what()))?;
                let n = self.count(elem_type.min_bytes(), &|| format!("{} length", what()))?;
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    items.push(self.value(elem_type, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                GgufValue::Array(GgufArray { elem_type, items })
            }
        })
    }
}

impl Gguf {
    /// Open and parse a GGUF file; tensor data stays memory-mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bytes = if len < 64 {
            // Too small to be a model; a plain read also avoids mapping an empty file.
            Bytes::Owned(std::fs::read(path).map_err(|e| Error::io(path, e))?)
        } else {
            // SAFETY: the map is read-only. Like every reader of memory-mapped weights we assume
            // no other process truncates the file while it is open.
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        Self::parse(path.to_path_buf(), bytes)
    }

    /// Parse a GGUF image held in memory (`<memory>` stands for the path in errors).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(PathBuf::from("<memory>"), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let parsed = parse_layout(&bytes);
        let layout = parsed.map_err(|msg| Error::Gguf {
            path: path.clone(),
            msg,
        })?;
        Ok(Gguf {
            path,
            bytes: std::sync::Arc::new(bytes),
            version: layout.version,
            alignment: layout.alignment,
            data_start: layout.data_start,
            meta_index: index_of(layout.metadata.iter().map(|(k, _)| k)),
            metadata: layout.metadata,
            tensor_index: index_of(layout.tensors.iter().map(|t| &t.name)),
            tensors: layout.tensors,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset where tensor data begins.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> usize {
        self.bytes.len()
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string value; an error if present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", GgufValue::as_str)
    }

    /// A non-negative integer value (any integer type); an error if present with another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", GgufValue::as_u64)
    }

    /// A numeric value as f64; an error if present with another type.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", GgufValue::as_f64)
    }

    /// A boolean value; an error if present with another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", GgufValue::as_bool)
    }

    /// An array value; an error if present with another type.
    pub fn get_array(&self, key: &str) -> Result<Option<&GgufArray>> {
        self.typed(key, "an array", GgufValue::as_array)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                self.error(format!(
                    "metadata '{key}' should be {expected}, but is {} {}",
                    v.value_type().name(),
                    v.summary(40)
                ))
            }),
        }
    }

    /// An [`Error::Gguf`] about this file.
    pub fn error(&self, msg: impl Into<String>) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    /// `general.architecture` (`llama`, `bert`, ...).
    pub fn architecture(&self) -> Result<Option<&str>> {
        self.get_str("general.architecture")
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn view<'a>(&'a self, t: &'a TensorInfo) -> TensorView<'a> {
        TensorView {
            name: &t.name,
            ggml_type: t.ggml_type,
            dims: &t.dims,
            data: &self.bytes[t.offset..t.offset + t.n_bytes],
        }
    }

    /// The location and type of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_index
            .get(name)
            .map(|&i| self.view(&self.tensors[i]))
    }

    /// The whole file's bytes, shared (for matrices that point into the mapping without copying;
    /// tensor data of `t` lies at `t.offset..t.offset + t.n_bytes`).
    pub fn shared_bytes(&self) -> std::sync::Arc<dyn AsRef<[u8]> + Send + Sync> {
        self.bytes.clone()
    }

    /// Tell the kernel this process no longer needs the mapped pages of tensor `name` (for a
    /// tensor the caller has copied, e.g. into an interleaved layout): they leave the resident
    /// set, and are read back from the file if touched again. Does nothing for an in-memory
    /// image or an unknown name; the advice is best-effort (its error is ignored).
    pub fn release(&self, name: &str) {
        let (Some(t), Bytes::Mapped(m)) = (self.tensor_info(name), &*self.bytes) else {
            return;
        };
        #[cfg(unix)]
        // SAFETY: the map is read-only and backed by the file (`Mmap::map`, never written):
        // MADV_DONTNEED only drops this process's copy of the pages, and a later read faults the
        // same file bytes back in (under the assumption `open` makes: the file is not modified).
        // Pages shared with neighbouring tensors are dropped too and re-read the same way.
        unsafe {
            let _ =
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, t.offset, t.n_bytes);
        }
        #[cfg(not(unix))]
        let _ = (t, m);
    }

    /// Every tensor in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors.iter().map(|t| self.view(t))
    }

    /// Total number of tensor elements (the parameter count of a model file).
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.n_elements()))
    }

    /// Number of tensors of each ggml type, by type name, most common first.
    pub fn type_counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(u32, usize)> = Vec::new();
        for t in &self.tensors {
            match counts.iter_mut().find(|(id, _)| *id == t.ggml_type) {
                Some(c) => c.1 += 1,
                None => counts.push((t.ggml_type, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts
            .into_iter()
            .map(|(id, n)| (ggml_type_name(id), n))
            .collect()
    }
}

fn index_of<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.clone(), i)).collect()
}

struct Layout {
    version: u32,
    alignment: u64,
    data_start: usize,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorInfo>,
}

fn parse_layout(buf: &[u8]) -> Result<Layout, String> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.take(4, &|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(format!(
            "not a GGUF file (magic bytes {magic:02x?}, expected \"GGUF\")"
        ));
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 is not supported (versions 2 and 3 are)".into()),
        v if v > 3 && v.swap_bytes() <= 3 => {
            return Err("big-endian GGUF files are not supported".into())
        }
        v => {
            return Err(format!(
                "unsupported GGUF version {v} (versions 2 and 3 are)"
            ))
        }
    }
    // A tensor info takes at least 24 bytes (empty name, no dims); a key/value at least 13.
    let n_tensors = c.count(24, &|| "tensor count".into())?;
    let n_kv = c.count(13, &|| "metadata count".into())?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = std::collections::HashSet::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let what = |k: &str| format!("metadata '{k}'");
        let id = c.u32(&|| format!("{} type", what(&key)))?;
        let ty = ValueType::from_id(id)
            .ok_or_else(|| format!("{} has unknown value type {id}", what(&key)))?;
        let value = c.value(ty, 0, &|| what(&key))?;
        if !seen.insert(key.clone()) {
            return Err(format!("metadata key '{key}' appears twice"));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(format!(
                    "metadata 'general.alignment' is {}, expected a power of two up to 2^20",
                    v.summary(20)
                ))
            }
        },
    };

    let mut raw = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&|| format!("tensor #{i} name"))?;
        let tw = |field: &str| format!("tensor #{i} ('{name}') {field}");
        let n_dims = c.u32(&|| tw("dimension count"))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "{} is {n_dims}, at most {MAX_DIMS} are allowed",
                tw("dimension count")
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| tw(&format!("dims[{d}]")))?);
        }
        let ggml_type = c.u32(&|| tw("type"))?;
        let offset = c.u64(&|| tw("offset"))?;
        let info = ggml_type_info(ggml_type)
            .ok_or_else(|| format!("{} is unknown ggml type {ggml_type}", tw("type")))?;
        let n_bytes = info
            .tensor_bytes(&dims)
            .map_err(|m| format!("{} {dims:?} ({}): {m}", tw("dims"), info.name))?;
        if offset % alignment != 0 {
            return Err(format!(
                "{} {offset} is not a multiple of the alignment {alignment}",
                tw("offset")
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("tensor name '{name}' appears twice"));
        }
        raw.push((name, dims, ggml_type, offset, n_bytes));
    }

    let pos = c.pos as u64;
    let data_start = pos
        .checked_add(alignment - 1)
        .map(|p| p / alignment * alignment)
        .ok_or("data offset overflows")?;
    let file_len = buf.len() as u64;
    if !raw.is_empty() && data_start > file_len {
        return Err(format!(
            "truncated: tensor data should start at offset {data_start}, but the file ends at {file_len}"
        ));
    }
    let mut tensors = Vec::with_capacity(raw.len());
    for (i, (name, dims, ggml_type, offset, n_bytes)) in raw.into_iter().enumerate() {
        let end = data_start
            .checked_add(offset)
            .and_then(|s| s.checked_add(n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(format!(
                "truncated: tensor #{i} ('{name}') data at offset {offset} + {n_bytes} bytes lies \
                     beyond the end of the file ({} data bytes)",
                file_len.saturating_sub(data_start)
            ))
            }
        }
        tensors.push(TensorInfo {
            name,
            ggml_type,
            dims,
            offset: (data_start + offset) as usize,
            n_bytes: n_bytes as usize,
        });
    }
    Ok(Layout {
        version,
        alignment,
        data_start: data_start.min(file_len) as usize,
        metadata,
        tensors,
    })
}
