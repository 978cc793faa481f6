//! The 16-row interleaved layout of Q4_0, Q4_1 and Q8_0 weights ("x16"), for the broadcast
//! kernels of `dot_avx512`.
//!
//! GGUF stores a matrix row after row, each row its 32-blocks. A product with the row layout
//! multiplies one weight row with an activation block, then reduces 16 lanes to one number and
//! scales it: most of the instructions are that bookkeeping, not the integer products. In the x16
//! layout the 16 rows of a group are interleaved block by block, four bytes at a time:
//!
//! ```text
//! group g (rows 16g .. 16g + 16), block b:
//!   d[16]   f16 scales of the 16 rows
//!   m[16]   f16 minimums (Q4_1 only)
//!   qs      chunk c = 0 .. C: for row n = 0 .. 16, bytes 4c .. 4c + 4 of row n's quants
//!           (Q4: C = 4, the GGML nibble bytes as they are; Q8_0: C = 8, each byte XOR 0x80,
//!           i.e. q + 128 as an unsigned byte)
//! ```
//!
//! One 64-byte chunk is then 16 lanes of 4 weights, lane n of row n: `vpdpbusd` of a chunk with
//! 4 activation bytes broadcast to every lane adds 4 products to each of the 16 rows' sums, so a
//! block is 8 such instructions for 16 outputs, and the block's scales multiply 16 sums at once.
//! A group's bytes are exactly 16 GGML rows' bytes, so sizes and row ranges stay as they were.
//!
//! This module packs and unpacks the layout and holds its portable product (the reference and
//! the path of CPUs without the AVX-512 kernel).

use super::formats::{f16_at, QType, QK};
use super::quantize::Acts;

/// Rows per interleaved group.
pub const GROUP: usize = 16;

/// Whether `t` has an x16 layout.
pub fn supports(t: QType) -> bool {
    matches!(t, QType::Q4_0 | QType::Q4_1 | QType::Q8_0)
}

/// (offset of the quants inside a packed block group, number of 64-byte chunks).
pub(crate) fn layout(t: QType) -> (usize, usize) {
    match t {
        QType::Q4_1 => (64, 4),
        QType::Q8_0 => (32, 8),
        _ => (32, 4),
    }
}

/// Bytes of one block of 16 interleaved rows (16 GGML blocks).
fn group_block_bytes(t: QType) -> usize {
    GROUP * t.block_bytes()
}

/// (offset of the minimum, offset of the quants) inside a GGML block of `t`.
fn ggml_offsets(t: QType) -> (usize, usize) {
    match t {
        QType::Q4_1 => (2, 4),
        _ => (0, 2),
    }
}

/// The x16 bytes of `rows` GGML rows of `cols` elements (`rows` a multiple of [`GROUP`]).
///
/// Panics if `t` has no x16 layout or the sizes do not match (the caller checks both).
pub fn pack(t: QType, ggml: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    assert!(supports(t) && rows.is_multiple_of(GROUP) && cols.is_multiple_of(QK));
    let (bb, nb) = (t.block_bytes(), cols / QK);
    assert_eq!(ggml.len(), rows * nb * bb);
    let gbb = group_block_bytes(t);
    let (mo, qo) = ggml_offsets(t);
    let (pq, chunks) = layout(t);
    let flip = if t == QType::Q8_0 { 0x80 } else { 0 };
    let mut out = vec![0u8; ggml.len()];
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * gbb..(g * nb + b + 1) * gbb];
            for n in 0..GROUP {
                let src = &ggml[((g * GROUP + n) * nb + b) * bb..][..bb];
                dst[2 * n..2 * n + 2].copy_from_slice(&src[..2]);
                if t == QType::Q4_1 {
                    dst[32 + 2 * n..34 + 2 * n].copy_from_slice(&src[mo..mo + 2]);
                }
                for c in 0..chunks {
                    for k in 0..4 {
                        dst[pq + 64 * c + 4 * n + k] = src[qo + 4 * c + k] ^ flip;
                    }
                }
            }
        }
    }
    out
}

/// The GGML bytes of block `b` of lane `n` of one packed group (`nb` blocks per row), into
/// `blk` (at least `t.block_bytes()` long).
pub(crate) fn unpack_block(t: QType, group: &[u8], nb: usize, n: usize, b: usize, blk: &mut [u8]) {
    let gbb = group_block_bytes(t);
    let src = &group[b * gbb..(b + 1) * gbb];
    let (mo, qo) = ggml_offsets(t);
    let (pq, chunks) = layout(t);
    let flip = if t == QType::Q8_0 { 0x80 } else { 0 };
    debug_assert!(nb > b);
    blk[..2].copy_from_slice(&src[2 * n..2 * n + 2]);
    if t == QType::Q4_1 {
        blk[mo..mo + 2].copy_from_slice(&src[32 + 2 * n..34 + 2 * n]);
    }
    for c in 0..chunks {
        for k in 0..4 {
            blk[qo + 4 * c + k] = src[pq + 64 * c + 4 * n + k] ^ flip;
        }
    }
}

/// The GGML bytes of rows `0..rows` of packed bytes `w` (the inverse of [`pack`]).
pub fn unpack(t: QType, w: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let rb = cols / QK * t.block_bytes();
    let mut out = vec![0u8; rows * rb];
    for (r, row) in out.chunks_exact_mut(rb).enumerate() {
        unpack_row(t, w, cols, r, row);
    }
    out
}

/// The GGML bytes of row `r` of packed bytes `w` (whole groups of `cols`-element rows) into
/// `row` (`cols / 32` blocks).
pub(crate) fn unpack_row(t: QType, w: &[u8], cols: usize, r: usize, row: &mut [u8]) {
    let (bb, nb) = (t.block_bytes(), cols / QK);
    let group = &w[(r / GROUP) * GROUP * nb * bb..][..GROUP * nb * bb];
    for (b, blk) in row.chunks_exact_mut(bb).enumerate() {
        unpack_block(t, group, nb, r % GROUP, b, blk);
    }
}

/// Row `r` of packed bytes `w` (whole groups of `cols`-element rows) as f32 into `out`.
pub fn dequantize_row(t: QType, w: &[u8], cols: usize, r: usize, out: &mut [f32]) {
    let (bb, nb) = (t.block_bytes(), cols / QK);
    let group = &w[(r / GROUP) * GROUP * nb * bb..][..GROUP * nb * bb];
    let mut blk = [0u8; 34];
    for (b, o) in out.chunks_exact_mut(QK).enumerate() {
        unpack_block(t, group, nb, r % GROUP, b, &mut blk);
        super::dequant::dequantize_into(t, &blk[..bb], o);
    }
}

/// Whole packed groups `w` as f32 rows into `out` (rows, cols), as `dequant::dequantize_into`
/// does for the row layout (the same values: `q * d + m`).
pub fn dequantize_into(t: QType, w: &[u8], cols: usize, out: &mut [f32]) {
    match t {
        QType::Q4_0 => dequantize_groups::<0>(w, cols, out),
        QType::Q4_1 => dequantize_groups::<1>(w, cols, out),
        _ => dequantize_groups::<2>(w, cols, out),
    }
}

/// [`dequantize_into`] for one type (0: Q4_0, 1: Q4_1, 2: Q8_0), so the inner loops are
/// straight-line code the compiler vectorizes.
fn dequantize_groups<const T: u8>(w: &[u8], cols: usize, out: &mut [f32]) {
    let t = [QType::Q4_0, QType::Q4_1, QType::Q8_0][T as usize];
    let nb = cols / QK;
    let gbb = group_block_bytes(t);
    let (pq, chunks) = layout(t);
    for (g, rows) in out.chunks_mut(GROUP * cols).enumerate() {
        for b in 0..nb {
            let src = &w[(g * nb + b) * gbb..(g * nb + b + 1) * gbb];
            let qs = &src[pq..pq + 64 * chunks];
            for (n, row) in rows.chunks_exact_mut(cols).enumerate() {
                let d = f16_at(src, 2 * n);
                let m = if T == 1 { f16_at(src, 32 + 2 * n) } else { 0.0 };
                let o: &mut [f32; QK] = (&mut row[b * QK..(b + 1) * QK]).try_into().unwrap();
                for c in 0..chunks {
                    let q: [u8; 4] = qs[64 * c + 4 * n..64 * c + 4 * n + 4].try_into().unwrap();
                    for k in 0..4 {
                        if T == 2 {
                            o[4 * c + k] = (q[k] ^ 0x80) as i8 as f32 * d;
                        } else {
                            let off = if T == 0 { 8.0 } else { 0.0 };
                            o[4 * c + k] = ((q[k] & 15) as f32 - off) * d + m;
                            o[16 + 4 * c + k] = ((q[k] >> 4) as f32 - off) * d + m;
                        }
                    }
                }
            }
        }
    }
}

/// The portable product of packed weight rows with activation rows: `out[i * ldo + k] =
/// w_i · x_{j0 + k}` for the `nrows` rows in `w` (whole groups) and the `g` activation rows from
/// `j0`: each row unpacked to GGML bytes and multiplied by `dot_scalar::row32`.
#[allow(clippy::too_many_arguments)]
pub fn rows_scalar(
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let mut row = vec![0u8; acts.nb * t.block_bytes()];
    for i in 0..nrows {
        unpack_row(t, w, acts.nb * QK, i, &mut row);
        super::dot_scalar::row32(t, &row, acts, j0, &mut out[i * ldo..i * ldo + g]);
    }
}

/// The f16 scale of lane `n` in a packed block (for tests).
#[cfg(test)]
fn scale_of(group_block: &[u8], n: usize) -> f32 {
    f16_at(group_block, 2 * n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::quantize::quantize;
    use crate::util::rng::Rng;

    fn random(t: QType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
        quantize(t, &x).unwrap()
    }

    #[test]
    fn pack_unpack_round_trip_and_scales() {
        for t in [QType::Q4_0, QType::Q4_1, QType::Q8_0] {
            let (rows, cols) = (32, 96);
            let g = random(t, rows, cols, 7);
            let p = pack(t, &g, rows, cols);
            assert_eq!(p.len(), g.len());
            assert_eq!(unpack(t, &p, rows, cols), g, "{t}");
            // Lane 3 of group 1, block 2 carries row 19's scale.
            let bb = t.block_bytes();
            let nb = cols / QK;
            let gb = &p[(nb + 2) * 16 * bb..];
            assert_eq!(scale_of(gb, 3), f16_at(&g[(19 * nb + 2) * bb..], 0));
            let mut row = vec![0f32; cols];
            let mut want = vec![0f32; cols];
            dequantize_row(t, &p, cols, 19, &mut row);
            super::super::dequant::dequantize_into(t, &g[19 * nb * bb..20 * nb * bb], &mut want);
            assert_eq!(row, want);
        }
    }
}
