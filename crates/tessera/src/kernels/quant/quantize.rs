//! Quantizers: GGML reference quantization of f32 rows into blocks (for building weights and test
//! data), and the activation quantizer the integer kernels use (Q8 blocks of 32 or 256, as
//! llama.cpp quantizes activations before its integer dot products).

use super::formats::{f16_bits, round_f16, QType, QK, QK_K};
use crate::{Error, Result};

/// Quantize `x` (a whole number of blocks) into GGML blocks of type `t`, appended to a new vector.
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_K (the reference formulas).
pub fn quantize(t: QType, x: &[f32]) -> Result<Vec<u8>> {
    let n_bytes = t.bytes_for(x.len()).ok_or_else(|| {
        Error::Input(format!(
            "quantize {t}: {} elements is not a whole number of {}-element blocks",
            x.len(),
            t.block_elems()
        ))
    })?;
    let mut out = Vec::with_capacity(n_bytes);
    match t {
        QType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        QType::F16 => x.iter().for_each(|&v| out.extend_from_slice(&f16_bits(v))),
        QType::BF16 => x
            .iter()
            .for_each(|&v| out.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes())),
        QType::Q4_0 | QType::Q5_0 => {
            let bits = if t == QType::Q4_0 { 4 } else { 5 };
            for b in x.chunks_exact(QK) {
                quantize_sym(b, bits, &mut out);
            }
        }
        QType::Q4_1 | QType::Q5_1 => {
            let bits = if t == QType::Q4_1 { 4 } else { 5 };
            for b in x.chunks_exact(QK) {
                quantize_affine(b, bits, &mut out);
            }
        }
        QType::Q8_0 => {
            for b in x.chunks_exact(QK) {
                let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16_bits(d));
                out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
            }
        }
        QType::Q8K => {
            let mut qs = [0i8; QK_K];
            for b in x.chunks_exact(QK_K) {
                let d = quantize_q8k_block(b, &mut qs);
                out.extend_from_slice(&d.to_le_bytes());
                out.extend(qs.iter().map(|&q| q as u8));
                for g in qs.chunks_exact(16) {
                    let s: i32 = g.iter().map(|&q| q as i32).sum();
                    out.extend_from_slice(&(s as i16).to_le_bytes());
                }
            }
        }
        _ => {
            return Err(Error::Input(format!(
                "quantize: no quantizer for {t} (only dequantization and products)"
            )))
        }
    }
    Ok(out)
}

/// Q4_0 / Q5_0: scale from the value of largest magnitude, with its sign, so it maps to -2^(bits-1).
fn quantize_sym(b: &[f32], bits: u32, out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in b {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let half = (1 << (bits - 1)) as f32;
    let top = (1 << bits) - 1;
    let d = max / -half;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bits(d));
    let q = |v: f32| ((v * id + half + 0.5) as i32).clamp(0, top) as u8;
    pack_nibbles(b, bits, q, out);
}

/// Q4_1 / Q5_1: scale and minimum from the range.
fn quantize_affine(b: &[f32], bits: u32, out: &mut Vec<u8>) {
    let min = b.iter().fold(f32::MAX, |a, &v| a.min(v));
    let max = b.iter().fold(f32::MIN, |a, &v| a.max(v));
    let top = (1 << bits) - 1;
    let d = (max - min) / top as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bits(d));
    out.extend_from_slice(&f16_bits(min));
    let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, top) as u8;
    pack_nibbles(b, bits, q, out);
}

/// Write (5-bit: the qh word, then) the 16 nibble bytes of one 32-element block.
fn pack_nibbles(b: &[f32], bits: u32, q: impl Fn(f32) -> u8, out: &mut Vec<u8>) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (q(b[j]), q(b[j + 16]));
        qs[j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
        qh |= (((x0 >> 4) & 1) as u32) << j;
        qh |= (((x1 >> 4) & 1) as u32) << (j + 16);
    }
    if bits == 5 {
        out.extend_from_slice(&qh.to_le_bytes());
    }
    out.extend_from_slice(&qs);
}

/// Quantize 256 values as Q8_K (scale from the signed value of largest magnitude mapped to -127);
/// returns the scale `d`.
pub(crate) fn quantize_q8k_block(b: &[f32], qs: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in b {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        qs.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in qs.iter_mut().zip(b) {
        *q = round_even(iscale * v).clamp(-127, 127) as i8;
    }
    1.0 / iscale
}

/// Activations quantized for the integer kernels: `n` rows of `nb` blocks (32 or 256 elements).
///
/// Kept in a reusable scratch: quantizing into an `Acts` that already has the capacity allocates
/// nothing.
#[derive(Default, Debug, Clone)]
pub struct Acts {
    /// Elements per block (32 or 256).
    pub block: usize,
    /// Blocks per row.
    pub nb: usize,
    /// Rows.
    pub n: usize,
    /// (n, nb * block) quantized values in -127..=127.
    pub qs: Vec<i8>,
    /// (n, nb) scales: f16-rounded for 32-blocks (as GGML's Q8_0/Q8_1), f32 for 256-blocks (Q8_K).
    pub d: Vec<f32>,
    /// (n, nb) f16-rounded `d * Σ qs` of each block (GGML's Q8_1 `s`); 32-blocks only.
    pub s: Vec<f32>,
    /// (n, nb) integer sum of each block's qs.
    pub sum: Vec<i32>,
    /// (n, nb * 16) integer sums of 16 consecutive qs; 256-blocks only.
    pub bsums: Vec<i32>,
}

/// `v` rounded to the nearest integer, ties to even (valid for |v| < 2^22; GGML's `nearest_int`).
#[inline(always)]
fn round_even(v: f32) -> i32 {
    let t = v + 12582912.0;
    (t.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Quantize whole 32-blocks of `x` to Q8 (GGML's Q8_0 / Q8_1 on x86: `d = amax / 127`, values
/// `x · 127 / amax` rounded to nearest even, `d` and `s = d Σq` rounded to f16). Written so the
/// compiler vectorizes it; the SIMD levels call it with their target features enabled.
#[inline(always)]
pub(crate) fn quantize_blocks32(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    sums: &mut [i32],
) {
    let blocks = x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK));
    for ((((xb, qb), d), s), sum) in blocks.zip(d.iter_mut()).zip(s.iter_mut()).zip(sums) {
        // `if v > a` (a vector max; NaN never taken) rather than `f32::max`, whose NaN rule keeps
        // the compiler from vectorizing it: the same value for every input.
        let bigger = |a: f32, v: f32| if v > a { v } else { a };
        let mut m = [0f32; 16];
        for c in xb.chunks_exact(16) {
            for (a, &v) in m.iter_mut().zip(c) {
                *a = bigger(*a, v.abs());
            }
        }
        let amax = m.iter().fold(0f32, |a, &v| bigger(a, v));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut total = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            let r = round_even(v * id);
            *q = r as i8;
            total += r;
        }
        let dd = amax / 127.0;
        *d = round_f16(dd);
        *s = round_f16(dd * total as f32);
        *sum = total;
    }
}

/// Set `v`'s length to `len` without shrinking its allocation.
pub(crate) fn resize<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() != len {
        v.resize(len, fill);
    }
}

#[cfg(test)]
mod tests {
    use super::super::dequant::dequantize_into;
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect()
    }

    #[test]
    fn round_trip_error_is_within_a_step() {
        let x = ramp(512);
        // The largest error as a fraction of the block's largest magnitude: half a step, except
        // Q4_0/Q5_0, whose top value on the side opposite the largest magnitude saturates (a step).
        for (t, frac) in [
            (QType::Q8_0, 0.5 / 127.0),
            (QType::Q4_0, 1.0 / 8.0),
            (QType::Q4_1, 1.0 / 15.0),
            (QType::Q5_0, 1.0 / 16.0),
            (QType::Q5_1, 1.0 / 31.0),
            (QType::Q8K, 0.5 / 127.0),
        ] {
            let b = quantize(t, &x).unwrap();
            assert_eq!(b.len(), t.bytes_for(x.len()).unwrap());
            let mut y = vec![0f32; x.len()];
            dequantize_into(t, &b, &mut y);
            for (xb, yb) in x.chunks(t.block_elems()).zip(y.chunks(t.block_elems())) {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (a, b) in xb.iter().zip(yb) {
                    // Plus the f16 rounding of the scale (and minimum).
                    assert!(
                        (a - b).abs() <= amax * (frac + 2e-3) + 1e-6,
                        "{t}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_partial_blocks() {
        assert!(quantize(QType::Q4_1, &[0.0; 33]).is_err());
        assert!(quantize(QType::Q4K, &[0.0; 256]).is_err());
    }
}
