//! Portable scalar products of one weight row with activation rows: the reference every SIMD
//! kernel is tested against, and the path used where no SIMD kernel applies.
//!
//! Per 32-block (GGML's `vec_dot_q*_q8_0` / `_q8_1` arithmetic):
//!   Σ_blocks  d_w d_x Σ_i q_w[i] q_x[i]  +  m_w s_x
//! Per K super-block (`vec_dot_q*_K_q8_K`):
//!   Σ_blocks  (d_w d_x) Σ_g scale_g Σ_{i∈g} q_w[i] q_x[i]  -  (dmin_w d_x) Σ_g min_g bsum_g

use super::dequant::{decode32, decode_k, BlockK};
use super::formats::{bf16_at, f16_at, f32_at, QType, QK, QK_K};
use super::quantize::Acts;

/// Integer dot product of two equal-length i8 slices.
#[inline(always)]
pub fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// `out[k] = w · x_{j0 + k}` for a row `w` of 32-blocks of type `t`, against `acts` (32-blocks).
pub fn row32(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    let (nb, bb) = (acts.nb, t.block_bytes());
    for (k, o) in out.iter_mut().enumerate() {
        let j = j0 + k;
        let y = acts.row(j);
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = decode32(t, &w[b * bb..(b + 1) * bb]);
            let isum = idot(&blk.q, &y[b * QK..(b + 1) * QK]);
            let (dx, sx) = (acts.d[j * nb + b], acts.s[j * nb + b]);
            acc += (blk.d * dx) * isum as f32 + blk.m * sx;
        }
        *o = acc;
    }
}

/// The integer parts of one K super-block against Q8_K values: (Σ_g scale_g Σ q q, Σ_g min_g bsum_g).
#[inline(always)]
pub fn k_block_ints(k: &BlockK, y: &[i8], bsums: &[i32]) -> (i32, i32) {
    let mut isum = 0i32;
    let mut imin = 0i32;
    for g in 0..16 {
        isum += k.scale[g] * idot(&k.q[16 * g..16 * g + 16], &y[16 * g..16 * g + 16]);
        imin += k.min[g] * bsums[g];
    }
    (isum, imin)
}

/// `out[k] = w · x_{j0 + k}` for a row `w` of K super-blocks of type `t`, against `acts` (Q8_K).
#[inline(always)]
pub fn row_k(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    let (nb, bb) = (acts.nb, t.block_bytes());
    let mut k = BlockK::default();
    out.iter_mut().for_each(|o| *o = 0.0);
    for b in 0..nb {
        decode_k(t, &w[b * bb..(b + 1) * bb], &mut k);
        for (i, o) in out.iter_mut().enumerate() {
            let j = j0 + i;
            let y = &acts.row(j)[b * QK_K..(b + 1) * QK_K];
            let bs = &acts.bsums[(j * nb + b) * 16..(j * nb + b + 1) * 16];
            let (isum, imin) = k_block_ints(&k, y, bs);
            let dx = acts.d[j * nb + b];
            *o += (k.d * dx) * isum as f32 - (k.dmin * dx) * imin as f32;
        }
    }
}

/// Reads one element at a byte offset.
type ReadFn = fn(&[u8], usize) -> f32;

/// `w · x` for a row of F32, F16 or BF16 weights (in that type's bytes) and an f32 vector.
pub fn row_float(t: QType, w: &[u8], x: &[f32]) -> f32 {
    // Eight partial sums, so the compiler can vectorize the F32 case.
    let mut acc = [0f32; 8];
    let (size, get): (usize, ReadFn) = match t {
        QType::F16 => (2, f16_at),
        QType::BF16 => (2, bf16_at),
        _ => (4, f32_at),
    };
    let mut chunks = x.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += get(w, (i + l) * size) * c[l];
        }
        i += 8;
    }
    let mut tail = 0f32;
    for (l, &v) in chunks.remainder().iter().enumerate() {
        tail += get(w, (i + l) * size) * v;
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::super::dequant::dequantize_into;
    use super::super::quantize::quantize;
    use super::*;

    /// The integer kernel equals the f32 dot of the dequantized weights with the dequantized
    /// activations (up to f32 rounding).
    #[test]
    fn integer_dot_matches_dequantized_dot() {
        let cols = 512;
        let w: Vec<f32> = (0..cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7 % 31) as f32 - 15.0) / 11.0)
            .collect();
        for t in [
            QType::Q4_0,
            QType::Q4_1,
            QType::Q5_0,
            QType::Q5_1,
            QType::Q8_0,
        ] {
            let wb = quantize(t, &w).unwrap();
            let mut wd = vec![0f32; cols];
            dequantize_into(t, &wb, &mut wd);
            let mut a = Acts::default();
            a.quantize(&x, 1, cols, QK);
            let mut xd = vec![0f32; cols];
            for (i, v) in xd.iter_mut().enumerate() {
                *v = a.qs[i] as f32 * a.d[i / QK];
            }
            let want: f32 = wd.iter().zip(&xd).map(|(a, b)| a * b).sum();
            let mut got = [0f32];
            row32(t, &wb, &a, 0, &mut got);
            // Q4_1/Q5_1 use s = f16(d Σq): its rounding is the only approximation.
            let tol = 1e-3 * wd.iter().zip(&xd).map(|(a, b)| (a * b).abs()).sum::<f32>();
            assert!((got[0] - want).abs() <= tol, "{t}: {} vs {want}", got[0]);
        }
    }
}
