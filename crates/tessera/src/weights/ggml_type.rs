//! The ggml tensor element types a GGUF file may name: id, name, block size and bytes per block.
//!
//! A quantized type stores its elements in blocks of `block_size` along the first (fastest)
//! dimension; each block takes `block_bytes`. Plain types have blocks of one element.

/// Layout facts about one ggml tensor type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlTypeInfo {
    /// The type id stored in the file.
    pub id: u32,
    /// The name llama.cpp prints (`F32`, `Q4_1`, `Q6_K`, ...).
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

/// (id, name, elements per block, bytes per block). Ids 4, 5 and 31–33 were retired upstream.
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// Layout of ggml type `id`, or `None` for an id this reader does not know.
pub fn ggml_type_info(id: u32) -> Option<GgmlTypeInfo> {
    TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|&(id, name, block_size, block_bytes)| GgmlTypeInfo {
            id,
            name,
            block_size,
            block_bytes,
        })
}

/// The name of ggml type `id` (`"type 99"` when unknown).
pub fn ggml_type_name(id: u32) -> String {
    ggml_type_info(id)
        .map(|t| t.name.to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

impl GgmlTypeInfo {
    /// Bytes taken by a tensor of this type with `dims` (first dimension fastest), or an error
    /// message when the first dimension is not a whole number of blocks or the size overflows.
    pub fn tensor_bytes(&self, dims: &[u64]) -> Result<u64, String> {
        let first = dims.first().copied().unwrap_or(1);
        if first % self.block_size != 0 {
            return Err(format!(
                "first dimension {first} is not a multiple of the {} block size {}",
                self.name, self.block_size
            ));
        }
        let mut bytes = (first / self.block_size)
            .checked_mul(self.block_bytes)
            .ok_or("size overflows")?;
        for &d in dims.iter().skip(1) {
            bytes = bytes.checked_mul(d).ok_or("size overflows")?;
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let q41 = ggml_type_info(3).unwrap();
        assert_eq!(q41.name, "Q4_1");
        assert_eq!(q41.tensor_bytes(&[64, 3]).unwrap(), 2 * 20 * 3);
        assert!(q41.tensor_bytes(&[33]).is_err());
        assert!(q41.tensor_bytes(&[32, u64::MAX]).is_err());
        assert_eq!(ggml_type_info(0).unwrap().tensor_bytes(&[]).unwrap(), 4);
        assert!(ggml_type_info(4).is_none());
        assert_eq!(ggml_type_name(99), "type 99");
    }
}
