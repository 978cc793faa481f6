//! AVX2 (+ FMA, F16C) products of one weight row with activation rows, for x86 CPUs without
//! AVX-512 VNNI.
//!
//! 32-blocks: a block becomes 32 unsigned bytes (nibbles, 5-bit values, or |q| for Q8_0 with the
//! activation's sign flipped where q < 0); `vpmaddubsw` + `vpmaddwd` give 8 i32 partial sums (no
//! i16 saturation: at most 2 · 128 · 127 < 2^15), which are scaled by `d_w d_x` and accumulated in
//! f32. Offsets (Q4_0: 8, Q5_0: 16) go through the activation block sums. K-quants use the portable
//! code compiled with AVX2 enabled.

use std::arch::x86_64::*;

use super::dot_scalar::row_k as row_k_portable;
use super::formats::{QType, QK};
use super::quantize::Acts;

/// Whether this CPU runs the kernels in this file.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

const Q40: u8 = 0;
const Q41: u8 = 1;
const Q50: u8 = 2;
const Q51: u8 = 3;
const Q80: u8 = 4;

/// `out[k] = w · x_{j0 + k}` for a row of 32-blocks of type `t` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
///
/// Panics if `w` is not `acts.nb` blocks or the activation rows are out of range.
pub fn row32(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    assert!(available(), "AVX2 kernel called on a CPU without it");
    assert_eq!(acts.block, QK);
    assert_eq!(w.len(), acts.nb * t.block_bytes());
    assert!(j0 + out.len() <= acts.n);
    assert!(acts.qs.len() >= acts.n * acts.nb * QK && acts.d.len() >= acts.n * acts.nb);
    assert!(acts.s.len() >= acts.n * acts.nb && acts.sum.len() >= acts.n * acts.nb);
    for (k, o) in out.iter_mut().enumerate() {
        // SAFETY: the CPU features were checked above; `w` holds exactly `nb` blocks and the
        // activation arrays hold row `j0 + k` (asserted), all the kernel reads.
        *o = unsafe {
            match t {
                QType::Q4_0 => row::<Q40>(w, acts, j0 + k),
                QType::Q4_1 => row::<Q41>(w, acts, j0 + k),
                QType::Q5_0 => row::<Q50>(w, acts, j0 + k),
                QType::Q5_1 => row::<Q51>(w, acts, j0 + k),
                QType::Q8_0 => row::<Q80>(w, acts, j0 + k),
                _ => panic!("row32: {t} is not a 32-block type"),
            }
        };
    }
}

/// Block bytes and the offset of the packed low bits inside a block.
const fn layout(kind: u8) -> (usize, usize) {
    match kind {
        Q40 => (18, 2),
        Q41 => (20, 4),
        Q50 => (22, 6),
        Q51 => (24, 8),
        _ => (34, 2),
    }
}

/// f16 at `p` as f32.
///
/// # Safety
/// `p..p + 2` must be readable; F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn h2f(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// Horizontal sum of 8 f32.
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The product of one weight row with activation row `j`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` must be `acts.nb` blocks of `KIND`, and row `j` of
/// `acts` must exist.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row<const KIND: u8>(w: &[u8], acts: &Acts, j: usize) -> f32 {
    let (bb, qo) = layout(KIND);
    let has_min = KIND == Q41 || KIND == Q51;
    let offset = match KIND {
        Q40 => 8.0f32,
        Q50 => 16.0,
        _ => 0.0,
    };
    let nb = acts.nb;
    let wp = w.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let (mut corr, mut bias) = (0f32, 0f32);
    for b in 0..nb {
        let pb = wp.add(b * bb);
        let ib = j * nb + b;
        let mut y = _mm256_loadu_si256(acts.qs.as_ptr().add(ib * QK) as *const __m256i);
        let wv = if KIND == Q80 {
            let v = _mm256_loadu_si256(pb.add(qo) as *const __m256i);
            y = _mm256_sign_epi8(y, v);
            _mm256_abs_epi8(v)
        } else {
            let q = _mm_loadu_si128(pb.add(qo) as *const __m128i);
            let mut v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
            if KIND == Q50 || KIND == Q51 {
                // Spread the 32 bits of qh to 32 bytes (0xff where set), keep 0x10 of each.
                let qh = (pb.add(qo - 4) as *const u32).read_unaligned();
                let shuf = _mm256_set_epi64x(
                    0x0303030303030303,
                    0x0202020202020202,
                    0x0101010101010101,
                    0,
                );
                let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
                let bits = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
                let set = _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1));
                v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
            v
        };
        let dp = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, y), ones);
        let s = h2f(pb) * *acts.d.get_unchecked(ib);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), _mm256_set1_ps(s), acc);
        if offset != 0.0 {
            corr += s * *acts.sum.get_unchecked(ib) as f32;
        }
        if has_min {
            bias += h2f(pb.add(2)) * *acts.s.get_unchecked(ib);
        }
    }
    hsum(acc) - offset * corr + bias
}

/// Quantize activations to Q8 32-blocks: the portable code compiled for AVX2.
pub fn quantize32(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32]) {
    assert!(available(), "AVX2 kernel called on a CPU without it");
    // SAFETY: the CPU features were checked; the callee is safe code (bounds-checked).
    unsafe { quantize32_avx2(x, qs, d, s, sum) }
}

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize32_avx2(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32]) {
    super::quantize::quantize_blocks32(x, qs, d, s, sum)
}

/// `out[k] = w · x_{j0 + k}` for a row of K super-blocks: the portable code compiled for AVX2.
pub fn row_k(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    assert!(available(), "AVX2 kernel called on a CPU without it");
    // SAFETY: the CPU features were checked; the callee is safe code (bounds-checked).
    unsafe { row_k_avx2(t, w, acts, j0, out) }
}

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_k_avx2(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    row_k_portable(t, w, acts, j0, out)
}

/// `w · x` for a row of F32, F16 or BF16 weights (`w` holds exactly `x.len()` elements).
pub fn row_float(t: QType, w: &[u8], x: &[f32]) -> f32 {
    assert!(available(), "AVX2 kernel called on a CPU without it");
    let size = if t == QType::F32 { 4 } else { 2 };
    assert_eq!(w.len(), x.len() * size);
    // SAFETY: the CPU features were checked; `w` holds `x.len()` elements of `t` (asserted).
    unsafe { row_float_avx2(t, w, x) }
}

/// # Safety
/// AVX2, FMA and F16C must be available; `w` must hold `x.len()` elements of type `t`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_float_avx2(t: QType, w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut a1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(load_w(t, wp, i), _mm256_loadu_ps(xp.add(i)), a0);
        a1 = _mm256_fmadd_ps(load_w(t, wp, i + 8), _mm256_loadu_ps(xp.add(i + 8)), a1);
        i += 16;
    }
    let mut s = hsum(_mm256_add_ps(a0, a1));
    if i < n {
        let size = if t == QType::F32 { 4 } else { 2 };
        s += super::dot_scalar::row_float(t, &w[i * size..], &x[i..]);
    }
    s
}

/// 8 weights from element `i` of a float row, as f32.
///
/// # Safety
/// Elements `i..i + 8` of the row at `wp` must be readable; AVX2 and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_w(t: QType, wp: *const u8, i: usize) -> __m256 {
    match t {
        QType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)),
        QType::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)),
            16,
        )),
        _ => _mm256_loadu_ps(wp.add(4 * i) as *const f32),
    }
}
