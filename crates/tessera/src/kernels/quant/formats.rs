//! The GGML tensor types: ids, block sizes, and the byte layout of each block.
//!
//! Every quantized type stores a row as a run of blocks; a block holds `block_elems` weights in
//! `block_bytes` bytes, little-endian. The layouts (offsets in bytes inside one block):
//!
//! | type | elems | bytes | layout |
//! |---|---|---|---|
//! | Q4_0 | 32 | 18 | d f16 @0, qs\[16\] @2 (low nibbles: elems 0..16, high: 16..32); w = d (q - 8) |
//! | Q4_1 | 32 | 20 | d f16 @0, m f16 @2, qs\[16\] @4; w = d q + m |
//! | Q5_0 | 32 | 22 | d f16 @0, qh u32 @2 (bit i = 5th bit of elem i), qs\[16\] @6; w = d (q - 16) |
//! | Q5_1 | 32 | 24 | d f16 @0, m f16 @2, qh u32 @4, qs\[16\] @8; w = d q + m |
//! | Q8_0 | 32 | 34 | d f16 @0, qs i8\[32\] @2; w = d q |
//! | Q2_K | 256 | 84 | scales\[16\] @0 (low nibble scale, high nibble min), qs\[64\] @16, d f16 @80, dmin f16 @82 |
//! | Q3_K | 256 | 110 | hmask\[32\] @0, qs\[64\] @32, scales\[12\] @96 (16 six-bit scales), d f16 @108 |
//! | Q4_K | 256 | 144 | d f16 @0, dmin f16 @2, scales\[12\] @4 (8 six-bit scale/min pairs), qs\[128\] @16 |
//! | Q5_K | 256 | 176 | d f16 @0, dmin f16 @2, scales\[12\] @4, qh\[32\] @16, qs\[128\] @48 |
//! | Q6_K | 256 | 210 | ql\[128\] @0, qh\[64\] @128, scales i8\[16\] @192, d f16 @208 |
//! | Q8_K | 256 | 292 | d f32 @0, qs i8\[256\] @4, bsums i16\[16\] @260 (sums of 16 qs each) |

/// A GGML tensor element type supported by tessera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, one f16 scale per 32.
    Q4_0,
    /// 4-bit, f16 scale and minimum per 32.
    Q4_1,
    /// 5-bit, one f16 scale per 32.
    Q5_0,
    /// 5-bit, f16 scale and minimum per 32.
    Q5_1,
    /// 8-bit, one f16 scale per 32.
    Q8_0,
    /// 2-bit K-quant (super-blocks of 256).
    Q2K,
    /// 3-bit K-quant.
    Q3K,
    /// 4-bit K-quant.
    Q4K,
    /// 5-bit K-quant.
    Q5K,
    /// 6-bit K-quant.
    Q6K,
    /// 8-bit K-quant with f32 scale (used for activations).
    Q8K,
}

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Elements per block of the 32-element types.
pub const QK: usize = 32;

impl QType {
    /// Every supported type, in GGML id order.
    pub const ALL: [QType; 14] = [
        QType::F32,
        QType::F16,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q8_0,
        QType::Q2K,
        QType::Q3K,
        QType::Q4K,
        QType::Q5K,
        QType::Q6K,
        QType::Q8K,
        QType::BF16,
    ];

    /// The type with GGML id `id` (`ggml_type`), if supported.
    pub fn from_ggml(id: u32) -> Option<QType> {
        Some(match id {
            0 => QType::F32,
            1 => QType::F16,
            2 => QType::Q4_0,
            3 => QType::Q4_1,
            6 => QType::Q5_0,
            7 => QType::Q5_1,
            8 => QType::Q8_0,
            10 => QType::Q2K,
            11 => QType::Q3K,
            12 => QType::Q4K,
            13 => QType::Q5K,
            14 => QType::Q6K,
            15 => QType::Q8K,
            30 => QType::BF16,
            _ => return None,
        })
    }

    /// The GGML id (`ggml_type`) of this type.
    pub fn ggml_id(self) -> u32 {
        match self {
            QType::F32 => 0,
            QType::F16 => 1,
            QType::Q4_0 => 2,
            QType::Q4_1 => 3,
            QType::Q5_0 => 6,
            QType::Q5_1 => 7,
            QType::Q8_0 => 8,
            QType::Q2K => 10,
            QType::Q3K => 11,
            QType::Q4K => 12,
            QType::Q5K => 13,
            QType::Q6K => 14,
            QType::Q8K => 15,
            QType::BF16 => 30,
        }
    }

    /// Elements per block (1 for the float types).
    pub fn block_elems(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0 => QK,
            QType::Q2K | QType::Q3K | QType::Q4K | QType::Q5K | QType::Q6K | QType::Q8K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q5_1 => 24,
            QType::Q8_0 => 34,
            QType::Q2K => 84,
            QType::Q3K => 110,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
            QType::Q8K => 292,
        }
    }

    /// The GGML name (`q4_1`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "f32",
            QType::F16 => "f16",
            QType::BF16 => "bf16",
            QType::Q4_0 => "q4_0",
            QType::Q4_1 => "q4_1",
            QType::Q5_0 => "q5_0",
            QType::Q5_1 => "q5_1",
            QType::Q8_0 => "q8_0",
            QType::Q2K => "q2_K",
            QType::Q3K => "q3_K",
            QType::Q4K => "q4_K",
            QType::Q5K => "q5_K",
            QType::Q6K => "q6_K",
            QType::Q8K => "q8_K",
        }
    }

    /// Whether the type is F32, F16 or BF16 (products run in f32).
    pub fn is_float(self) -> bool {
        matches!(self, QType::F32 | QType::F16 | QType::BF16)
    }

    /// Whether the type uses 256-element super-blocks.
    pub fn is_k_quant(self) -> bool {
        self.block_elems() == QK_K
    }

    /// Byte offsets of the f16 scale fields (d, and m / dmin where present) inside a block.
    pub fn f16_scale_offsets(self) -> &'static [usize] {
        match self {
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => &[0],
            QType::Q4_1 | QType::Q5_1 | QType::Q4K | QType::Q5K => &[0, 2],
            QType::Q2K => &[80, 82],
            QType::Q3K => &[108],
            QType::Q6K => &[208],
            _ => &[],
        }
    }

    /// Bytes needed for `n` elements, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }
}

impl std::fmt::Display for QType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An f16 stored little-endian at `b[0..2]`, as f32.
#[inline(always)]
pub fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// A bf16 stored little-endian at `b[off..off + 2]`, as f32.
#[inline(always)]
pub fn bf16_at(b: &[u8], off: usize) -> f32 {
    f32::from_bits((u16::from_le_bytes([b[off], b[off + 1]]) as u32) << 16)
}

/// An f32 stored little-endian at `b[off..off + 4]`.
#[inline(always)]
pub fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A u32 stored little-endian at `b[off..off + 4]`.
#[inline(always)]
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// `x` rounded to the nearest f16 (GGML stores block scales as f16).
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// The f16 bits of `x`.
#[inline(always)]
pub fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in QType::ALL {
            assert_eq!(QType::from_ggml(t.ggml_id()), Some(t));
        }
        assert_eq!(QType::from_ggml(4), None);
        assert_eq!(QType::from_ggml(16), None);
    }

    #[test]
    fn bytes_for_checks_blocks() {
        assert_eq!(QType::Q4_1.bytes_for(576), Some(18 * 20));
        assert_eq!(QType::Q4_1.bytes_for(577), None);
        assert_eq!(QType::Q6K.bytes_for(512), Some(420));
        assert_eq!(QType::F16.bytes_for(3), Some(6));
    }
}
