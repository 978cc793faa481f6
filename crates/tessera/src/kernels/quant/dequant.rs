//! Scalar reference decoding of every block format: to integers plus scales (what the integer dot
//! products use) and to f32 (dequantization, with GGML's operation order so results are bit-equal).

// Index loops mirror GGML's block layouts, several arrays per index.
#![allow(clippy::needless_range_loop)]

use super::formats::{bf16_at, f16_at, f32_at, u32_at, QType, QK, QK_K};

/// A decoded 32-element block: weight `i` is `d * q[i] + m`.
#[derive(Clone, Copy, Debug)]
pub struct Block32 {
    /// Scale.
    pub d: f32,
    /// Offset (0 for the types without a minimum).
    pub m: f32,
    /// Integer weights (signed: Q4_0 in -8..8, Q5_0 in -16..16, Q8_0 in -128..128; Q4_1/Q5_1 in 0..32).
    pub q: [i8; QK],
}

/// Decode one block of Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0. `b` holds exactly one block.
pub fn decode32(t: QType, b: &[u8]) -> Block32 {
    let mut q = [0i8; QK];
    let (d, m) = match t {
        QType::Q4_0 | QType::Q4_1 => {
            let (m, qs) = if t == QType::Q4_0 {
                (0.0, &b[2..18])
            } else {
                (f16_at(b, 2), &b[4..20])
            };
            let off = if t == QType::Q4_0 { 8 } else { 0 };
            for j in 0..16 {
                q[j] = (qs[j] & 0x0f) as i8 - off;
                q[j + 16] = (qs[j] >> 4) as i8 - off;
            }
            (f16_at(b, 0), m)
        }
        QType::Q5_0 | QType::Q5_1 => {
            let (m, qh, qs) = if t == QType::Q5_0 {
                (0.0, u32_at(b, 2), &b[6..22])
            } else {
                (f16_at(b, 2), u32_at(b, 4), &b[8..24])
            };
            let off = if t == QType::Q5_0 { 16 } else { 0 };
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) as u8;
                let h1 = ((qh >> (j + 16)) & 1) as u8;
                q[j] = ((qs[j] & 0x0f) | (h0 << 4)) as i8 - off;
                q[j + 16] = ((qs[j] >> 4) | (h1 << 4)) as i8 - off;
            }
            (f16_at(b, 0), m)
        }
        QType::Q8_0 => {
            for j in 0..QK {
                q[j] = b[2 + j] as i8;
            }
            (f16_at(b, 0), 0.0)
        }
        _ => (0.0, 0.0),
    };
    Block32 { d, m, q }
}

/// A decoded K-quant super-block: weight `i` is `d * scale[i / 16] * q[i] - dmin * min[i / 16]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockK {
    /// Super-block scale.
    pub d: f32,
    /// Super-block scale of the minimums (0 for Q3_K, Q6_K, Q8_K).
    pub dmin: f32,
    /// Integer sub-block scales, one per 16 elements (Q4_K/Q5_K repeat each 32-element scale).
    pub scale: [i32; 16],
    /// Integer sub-block minimums, one per 16 elements.
    pub min: [i32; 16],
    /// Integer weights.
    pub q: [i8; QK_K],
}

impl Default for BlockK {
    fn default() -> Self {
        BlockK {
            d: 0.0,
            dmin: 0.0,
            scale: [0; 16],
            min: [0; 16],
            q: [0; QK_K],
        }
    }
}

/// The 6-bit scale and minimum of 32-element sub-block `j` (0..8) of Q4_K/Q5_K.
#[inline]
fn scale_min_k4(j: usize, s: &[u8]) -> (i32, i32) {
    if j < 4 {
        ((s[j] & 63) as i32, (s[j + 4] & 63) as i32)
    } else {
        (
            ((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4)) as i32,
            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as i32,
        )
    }
}

/// The 6-bit signed scale (already minus 32) of 16-element sub-block `i` (0..16) of Q3_K.
#[inline]
fn scale_q3k(i: usize, s: &[u8]) -> i32 {
    let v = match i {
        0..=3 => (s[i] & 0x0f) | ((s[i + 8] & 3) << 4),
        4..=7 => (s[i] & 0x0f) | (((s[i + 4] >> 2) & 3) << 4),
        8..=11 => (s[i - 8] >> 4) | (((s[i] >> 4) & 3) << 4),
        _ => (s[i - 8] >> 4) | (((s[i - 4] >> 6) & 3) << 4),
    };
    v as i32 - 32
}

/// Decode one K-quant super-block (`b` holds exactly one block) into `out`.
#[inline(always)]
pub fn decode_k(t: QType, b: &[u8], out: &mut BlockK) {
    match t {
        QType::Q2K => {
            let (sc, qs) = (&b[0..16], &b[16..80]);
            out.d = f16_at(b, 80);
            out.dmin = f16_at(b, 82);
            for g in 0..16 {
                out.scale[g] = (sc[g] & 0x0f) as i32;
                out.min[g] = (sc[g] >> 4) as i32;
            }
            for n in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        out.q[128 * n + 32 * j + l] = ((qs[32 * n + l] >> (2 * j)) & 3) as i8;
                    }
                }
            }
        }
        QType::Q3K => {
            let (hm, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
            out.d = f16_at(b, 108);
            out.dmin = 0.0;
            for g in 0..16 {
                out.scale[g] = scale_q3k(g, sc);
                out.min[g] = 0;
            }
            for n in 0..2 {
                for j in 0..4 {
                    let bit = 1u8 << (4 * n + j);
                    for l in 0..32 {
                        let lo = ((qs[32 * n + l] >> (2 * j)) & 3) as i8;
                        let hi = if hm[l] & bit != 0 { 0 } else { 4 };
                        out.q[128 * n + 32 * j + l] = lo - hi;
                    }
                }
            }
        }
        QType::Q4K | QType::Q5K => {
            out.d = f16_at(b, 0);
            out.dmin = f16_at(b, 2);
            let sc = &b[4..16];
            let (qh, qs) = if t == QType::Q4K {
                (None, &b[16..144])
            } else {
                (Some(&b[16..48]), &b[48..176])
            };
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, sc);
                out.scale[2 * j] = s;
                out.scale[2 * j + 1] = s;
                out.min[2 * j] = m;
                out.min[2 * j + 1] = m;
            }
            for jj in 0..4 {
                for l in 0..32 {
                    let v = qs[32 * jj + l];
                    let (mut lo, mut hi) = (v & 0x0f, v >> 4);
                    if let Some(qh) = qh {
                        lo |= ((qh[l] >> (2 * jj)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * jj + 1)) & 1) << 4;
                    }
                    out.q[64 * jj + l] = lo as i8;
                    out.q[64 * jj + 32 + l] = hi as i8;
                }
            }
        }
        QType::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            out.d = f16_at(b, 208);
            out.dmin = 0.0;
            for g in 0..16 {
                out.scale[g] = sc[g] as i8 as i32;
                out.min[g] = 0;
            }
            for n in 0..2 {
                for l in 0..32 {
                    let (a, c, h) = (ql[64 * n + l], ql[64 * n + l + 32], qh[32 * n + l]);
                    let y = &mut out.q[128 * n..128 * n + 128];
                    y[l] = ((a & 0x0f) | ((h & 3) << 4)) as i8 - 32;
                    y[l + 32] = ((c & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
                    y[l + 64] = ((a >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                    y[l + 96] = ((c >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                }
            }
        }
        QType::Q8K => {
            out.d = f32_at(b, 0);
            out.dmin = 0.0;
            out.scale = [1; 16];
            out.min = [0; 16];
            for i in 0..QK_K {
                out.q[i] = b[4 + i] as i8;
            }
        }
        _ => {}
    }
}

/// Dequantize whole blocks: `b` holds `out.len() / t.block_elems()` blocks of type `t`.
/// The caller guarantees the sizes match (checked by `QMatrix::new`).
pub fn dequantize_into(t: QType, b: &[u8], out: &mut [f32]) {
    match t {
        QType::F32 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32_at(c, 0);
            }
        }
        QType::F16 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f16_at(c, 0);
            }
        }
        QType::BF16 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = bf16_at(c, 0);
            }
        }
        QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0 => {
            for (o, blk) in out
                .chunks_exact_mut(QK)
                .zip(b.chunks_exact(t.block_bytes()))
            {
                let k = decode32(t, blk);
                for (y, &q) in o.iter_mut().zip(k.q.iter()) {
                    // GGML: x * d + m (m = 0 adds nothing: x * d + 0.0 == x * d).
                    *y = q as f32 * k.d + k.m;
                }
            }
        }
        _ => {
            let mut k = BlockK::default();
            for (o, blk) in out
                .chunks_exact_mut(QK_K)
                .zip(b.chunks_exact(t.block_bytes()))
            {
                decode_k(t, blk, &mut k);
                for (g, og) in o.chunks_exact_mut(16).enumerate() {
                    let dl = k.d * k.scale[g] as f32;
                    let ml = k.dmin * k.min[g] as f32;
                    for (y, &q) in og.iter_mut().zip(k.q[16 * g..16 * g + 16].iter()) {
                        *y = if ml == 0.0 {
                            dl * q as f32
                        } else {
                            dl * q as f32 - ml
                        };
                    }
                }
            }
        }
    }
}
