//! AVX-512 (BW + VNNI) products of one weight row with activation rows.
//!
//! 32-blocks: two weight blocks at a time become 64 unsigned bytes (nibbles, 5-bit values, or
//! |q| for Q8_0 with the activation's sign flipped where q < 0), `vpdpbusd` multiplies them with
//! 64 activation bytes into 16 i32 lanes (lanes 0..8 block A, 8..16 block B), and the lanes are
//! scaled by `d_w d_x` of their block and accumulated in f32. The constant offsets of Q4_0/Q5_0
//! (8, 16) are applied through the activation block sums. One weight unpack serves up to four
//! activation rows (prefill). K-quants decode each super-block with the portable code, compiled
//! here with AVX-512 enabled, so the integer dot products vectorize.

// Index loops over the R activation rows touch several arrays per index.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::dequant::decode32;
use super::dot_scalar::{idot, row_k as row_k_portable};
use super::formats::{QType, QK};
use super::quantize::Acts;

/// Whether this CPU runs the kernels in this file.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The checks every 32-block kernel here makes before its unsafe loop: the CPU features, `w`
/// exactly `nrows` rows of `acts.nb` blocks of `t`, activation rows `j0..j0 + g` present.
fn check_sizes(t: QType, w: &[u8], nrows: usize, acts: &Acts, j0: usize, g: usize) {
    assert!(
        available(),
        "AVX-512 VNNI kernel called on a CPU without it"
    );
    assert_eq!(acts.block, QK);
    assert_eq!(w.len(), nrows * acts.nb * t.block_bytes());
    assert!(j0 + g <= acts.n);
    assert!(acts.qs.len() >= acts.n * acts.nb * QK && acts.d.len() >= acts.n * acts.nb);
    assert!(acts.s.len() >= acts.n * acts.nb && acts.sum.len() >= acts.n * acts.nb);
}

const Q40: u8 = 0;
const Q41: u8 = 1;
const Q50: u8 = 2;
const Q51: u8 = 3;
const Q80: u8 = 4;

/// `out[i * ldo + k] = w_i · x_{j0 + k}` for the `nrows` weight rows in `w` (32-blocks of type
/// `t`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the `g` activation rows from `j0`.
///
/// Panics if the sizes do not fit (the product driver checks them before calling).
#[allow(clippy::too_many_arguments)]
pub fn rows32(
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    check_sizes(t, w, nrows, acts, j0, g);
    assert!(nrows == 0 || g == 0 || out.len() >= (nrows - 1) * ldo + g);
    // SAFETY: the CPU features were checked above; `w` holds exactly `nrows` rows of `nb` blocks,
    // the activation arrays hold rows `j0..j0 + g`, and `out` holds every index written (asserted).
    unsafe {
        match t {
            QType::Q4_0 => many::<Q40>(w, nrows, acts, j0, g, out, ldo),
            QType::Q4_1 => many::<Q41>(w, nrows, acts, j0, g, out, ldo),
            QType::Q5_0 => many::<Q50>(w, nrows, acts, j0, g, out, ldo),
            QType::Q5_1 => many::<Q51>(w, nrows, acts, j0, g, out, ldo),
            QType::Q8_0 => many::<Q80>(w, nrows, acts, j0, g, out, ldo),
            _ => panic!("rows32: {t} is not a 32-block type"),
        }
    }
}

/// The loop over weight rows and groups of activation rows of [`rows32`].
///
/// # Safety
/// As [`rows32`] asserts.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn many<const KIND: u8>(
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let rb = acts.nb * layout(KIND).0;
    for i in 0..nrows {
        let wr = &w[i * rb..(i + 1) * rb];
        let o = &mut out[i * ldo..];
        let mut k = 0;
        while k + 8 <= g {
            o[k..k + 8].copy_from_slice(&row_dot::<KIND, 8>(wr, acts, j0 + k));
            k += 8;
        }
        while k + 4 <= g {
            o[k..k + 4].copy_from_slice(&row_dot::<KIND, 4>(wr, acts, j0 + k));
            k += 4;
        }
        while k < g {
            o[k] = row_dot::<KIND, 1>(wr, acts, j0 + k)[0];
            k += 1;
        }
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn h2f(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// The 64 weights of blocks A (at `pa`) and B (at `pb`) as unsigned bytes, and (Q8_0) the mask of
/// negative weights.
///
/// # Safety
/// Both blocks must be readable; AVX-512 BW must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn unpack2<const KIND: u8>(pa: *const u8, pb: *const u8) -> (__m512i, __mmask64) {
    let qo = layout(KIND).1;
    if KIND == Q80 {
        let a = _mm256_loadu_si256(pa.add(qo) as *const __m256i);
        let b = _mm256_loadu_si256(pb.add(qo) as *const __m256i);
        let v = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        return (_mm512_abs_epi8(v), _mm512_movepi8_mask(v));
    }
    let a = _mm_loadu_si128(pa.add(qo) as *const __m128i);
    let b = _mm_loadu_si128(pb.add(qo) as *const __m128i);
    // [A low nibbles = elems 0..16, A high = 16..32, B low, B high]
    let a2 = _mm256_set_m128i(_mm_srli_epi16(a, 4), a);
    let b2 = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    let v = _mm512_inserti64x4(_mm512_castsi256_si512(a2), b2, 1);
    let mut v = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
    if KIND == Q50 || KIND == Q51 {
        // qh bit i is the fifth bit of element i: exactly a byte mask over the 32 elements.
        let ho = qo - 4;
        let ha = (pa.add(ho) as *const u32).read_unaligned() as u64;
        let hb = (pb.add(ho) as *const u32).read_unaligned() as u64;
        v = _mm512_mask_add_epi8(v, ha | (hb << 32), v, _mm512_set1_epi8(0x10));
    }
    (v, 0)
}

/// Four f16 values at `p0 + off` .. `p3 + off`, as f32.
///
/// # Safety
/// The four locations must be readable; F16C must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn h4(p: [*const u8; 4], off: usize) -> __m128 {
    let h = |q: *const u8| (q.add(off) as *const u16).read_unaligned() as u64;
    let bits = h(p[0]) | (h(p[1]) << 16) | (h(p[2]) << 32) | (h(p[3]) << 48);
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// The product of one weight row `w` (`acts.nb` blocks of `KIND`) with the `R` activation rows
/// from `j0`. Four blocks per step (their four scales multiplied in one vector), then a pair,
/// then a last odd block in scalar code.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, FMA and F16C must be available; `w` must be `acts.nb` blocks of `KIND`,
/// and rows `j0..j0 + R` of `acts` must exist (all arrays sized as `Acts::quantize` makes them).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn row_dot<const KIND: u8, const R: usize>(w: &[u8], acts: &Acts, j0: usize) -> [f32; R] {
    let (bb, _) = layout(KIND);
    let has_min = KIND == Q41 || KIND == Q51;
    let offset = match KIND {
        Q40 => 8.0f32,
        Q50 => 16.0,
        _ => 0.0,
    };
    let nb = acts.nb;
    let wp = w.as_ptr();
    let (qs, ad) = (acts.qs.as_ptr(), acts.d.as_ptr());
    let (asum, as_) = (acts.sum.as_ptr(), acts.s.as_ptr());
    let zero = _mm512_setzero_si512();
    let idx01 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let idx23 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut acc2 = [_mm512_setzero_ps(); R];
    let mut corr = [_mm_setzero_ps(); R];
    let mut bias = [_mm_setzero_ps(); R];
    let mut tail = [0f32; R];
    let mut b = 0;
    while b + 4 <= nb {
        let p0 = wp.add(b * bb);
        let p = [p0, p0.add(bb), p0.add(2 * bb), p0.add(3 * bb)];
        let (w01, n01) = unpack2::<KIND>(p[0], p[1]);
        let (w23, n23) = unpack2::<KIND>(p[2], p[3]);
        let dw = h4(p, 0);
        let mw = if has_min { h4(p, 2) } else { _mm_setzero_ps() };
        for r in 0..R {
            let ib = (j0 + r) * nb + b;
            let mut y01 = _mm512_loadu_si512(qs.add(ib * QK) as *const __m512i);
            let mut y23 = _mm512_loadu_si512(qs.add(ib * QK + 64) as *const __m512i);
            if KIND == Q80 {
                y01 = _mm512_mask_sub_epi8(y01, n01, zero, y01);
                y23 = _mm512_mask_sub_epi8(y23, n23, zero, y23);
            }
            let dp01 = _mm512_dpbusd_epi32(zero, w01, y01);
            let dp23 = _mm512_dpbusd_epi32(zero, w23, y23);
            let s4 = _mm_mul_ps(dw, _mm_loadu_ps(ad.add(ib)));
            let s = _mm512_castps128_ps512(s4);
            let s01 = _mm512_permutexvar_ps(idx01, s);
            let s23 = _mm512_permutexvar_ps(idx23, s);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp01), s01, acc[r]);
            acc2[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp23), s23, acc2[r]);
            if offset != 0.0 {
                let sums = _mm_cvtepi32_ps(_mm_loadu_si128(asum.add(ib) as *const __m128i));
                corr[r] = _mm_fmadd_ps(s4, sums, corr[r]);
            }
            if has_min {
                bias[r] = _mm_fmadd_ps(mw, _mm_loadu_ps(as_.add(ib)), bias[r]);
            }
        }
        b += 4;
    }
    if b + 2 <= nb {
        let pa = wp.add(b * bb);
        let pb = pa.add(bb);
        let (wv, neg) = unpack2::<KIND>(pa, pb);
        let (da, db) = (h2f(pa), h2f(pb));
        for r in 0..R {
            let ib = (j0 + r) * nb + b;
            let mut y = _mm512_loadu_si512(qs.add(ib * QK) as *const __m512i);
            if KIND == Q80 {
                y = _mm512_mask_sub_epi8(y, neg, zero, y);
            }
            let dp = _mm512_dpbusd_epi32(zero, wv, y);
            let (sa, sb) = (da * *ad.add(ib), db * *ad.add(ib + 1));
            let sv = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(sa), _mm512_set1_ps(sb));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), sv, acc[r]);
            if offset != 0.0 {
                tail[r] -= offset * (sa * *asum.add(ib) as f32 + sb * *asum.add(ib + 1) as f32);
            }
            if has_min {
                tail[r] += h2f(pa.add(2)) * *as_.add(ib) + h2f(pb.add(2)) * *as_.add(ib + 1);
            }
        }
        b += 2;
    }
    if b < nb {
        let t = [
            QType::Q4_0,
            QType::Q4_1,
            QType::Q5_0,
            QType::Q5_1,
            QType::Q8_0,
        ][KIND as usize];
        let k = decode32(t, &w[b * bb..(b + 1) * bb]);
        for r in 0..R {
            let ib = (j0 + r) * nb + b;
            let y = &acts.qs[ib * QK..(ib + 1) * QK];
            tail[r] += (k.d * acts.d[ib]) * idot(&k.q, y) as f32 + k.m * acts.s[ib];
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        // bias - offset * corr in lanes 0..4 (zero above), then one reduction.
        let extra = _mm_fnmadd_ps(_mm_set1_ps(offset), corr[r], bias[r]);
        let v = _mm512_add_ps(
            _mm512_add_ps(acc[r], acc2[r]),
            _mm512_zextps128_ps512(extra),
        );
        out[r] = _mm512_reduce_add_ps(v) + tail[r];
    }
    out
}

/// Quantize activations to Q8 32-blocks: the portable code compiled for AVX-512.
pub fn quantize32(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32]) {
    assert!(available(), "AVX-512 kernel called on a CPU without it");
    // SAFETY: the CPU features were checked; the callee is safe code (bounds-checked).
    unsafe { quantize32_avx512(x, qs, d, s, sum) }
}

/// # Safety
/// AVX-512 F/BW/VL must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn quantize32_avx512(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    sum: &mut [i32],
) {
    super::quantize::quantize_blocks32(x, qs, d, s, sum)
}

/// `out[k] = w · x_{j0 + k}` for a row of K super-blocks: the portable code compiled for AVX-512.
pub fn row_k(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    assert!(available(), "AVX-512 kernel called on a CPU without it");
    // SAFETY: the CPU features were checked; the callee is safe code (bounds-checked).
    unsafe { row_k_avx512(t, w, acts, j0, out) }
}

/// # Safety
/// AVX-512 F/BW/VL/VNNI must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_k_avx512(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    row_k_portable(t, w, acts, j0, out)
}

/// `w · x` for a row of F32, F16 or BF16 weights (`w` holds exactly `x.len()` elements).
pub fn row_float(t: QType, w: &[u8], x: &[f32]) -> f32 {
    assert!(available(), "AVX-512 kernel called on a CPU without it");
    let size = if t == QType::F32 { 4 } else { 2 };
    assert_eq!(w.len(), x.len() * size);
    // SAFETY: the CPU features were checked; `w` holds `x.len()` elements of `t` (asserted).
    unsafe { row_float_avx512(t, w, x) }
}

/// # Safety
/// AVX-512 F/BW and F16C must be available; `w` must hold `x.len()` elements of type `t`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_float_avx512(t: QType, w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm512_setzero_ps();
    let mut a1 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 32 <= n {
        a0 = _mm512_fmadd_ps(load_w(t, wp, i), _mm512_loadu_ps(xp.add(i)), a0);
        a1 = _mm512_fmadd_ps(load_w(t, wp, i + 16), _mm512_loadu_ps(xp.add(i + 16)), a1);
        i += 32;
    }
    while i + 16 <= n {
        a0 = _mm512_fmadd_ps(load_w(t, wp, i), _mm512_loadu_ps(xp.add(i)), a0);
        i += 16;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    if i < n {
        let size = if t == QType::F32 { 4 } else { 2 };
        s += super::dot_scalar::row_float(t, &w[i * size..], &x[i..]);
    }
    s
}

/// 16 weights from element `i` of a float row, as f32.
///
/// # Safety
/// Elements `i..i + 16` of the row at `wp` must be readable; AVX-512 F and F16C must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn load_w(t: QType, wp: *const u8, i: usize) -> __m512 {
    match t {
        QType::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2 * i) as *const __m256i)),
        QType::BF16 => _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(2 * i) as *const __m256i)),
            16,
        )),
        _ => _mm512_loadu_ps(wp.add(4 * i) as *const f32),
    }
}

/// `out[i * ldo + k] = w_i · x_{j0 + k}` for the `nrows` weight rows of `w` in the 16-row
/// interleaved layout (`interleave`: Q4_0, Q4_1 or Q8_0; `nrows` a multiple of 16) and the `g`
/// activation rows from `j0`.
///
/// Per block and group: the block's 16 scales are one vector, each 64-byte chunk of quants is 16
/// lanes of 4 weights, and each activation row costs 8 `vpdpbusd` (4 activation bytes broadcast
/// per chunk) plus one scale multiply-add for all 16 rows. Up to 8 activation rows share one
/// unpack of the weights.
///
/// Panics if the sizes do not fit (the product driver checks them before calling).
#[allow(clippy::too_many_arguments)]
pub fn rows_x16(
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    assert!(nrows == 0 || g == 0 || out.len() >= (nrows - 1) * ldo + g);
    // SAFETY: `out` holds every index `i * ldo + k` written (asserted) and is borrowed mutably.
    unsafe { rows_x16_strided(t, w, nrows, acts, j0, g, out.as_mut_ptr(), ldo, 1) }
}

/// [`rows_x16`] writing `out[i * ldo_w + k * ldo_a]` (weight row i, activation row j0 + k): with
/// `ldo_w = 1` and `ldo_a` = the matrix's rows, straight into a row-major (n, rows) product,
/// 16 outputs of an activation row per vector store.
///
/// # Safety
/// `out` must be valid for writes at every index `i * ldo_w + k * ldo_a` (i < nrows, k < g), and
/// no other thread may access those elements during the call. Panics on the size checks of
/// [`rows_x16`] (other than `out`'s).
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_x16_strided(
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: *mut f32,
    ldo_w: usize,
    ldo_a: usize,
) {
    check_sizes(t, w, nrows, acts, j0, g);
    assert!(nrows.is_multiple_of(16));
    // SAFETY: the CPU features were checked above; `w` and the activation rows are sized as
    // asserted; `out` is valid for every index written (the caller's contract).
    unsafe {
        match t {
            QType::Q4_0 => many_x16::<Q40>(w, nrows, acts, j0, g, out, ldo_w, ldo_a),
            QType::Q4_1 => many_x16::<Q41>(w, nrows, acts, j0, g, out, ldo_w, ldo_a),
            QType::Q8_0 => many_x16::<Q80>(w, nrows, acts, j0, g, out, ldo_w, ldo_a),
            _ => panic!("rows_x16_strided: {t} has no interleaved layout"),
        }
    }
}

/// The loop over row groups and groups of activation rows of [`rows_x16_strided`], writing
/// `out[i * ldo_w + k * ldo_a]`.
///
/// # Safety
/// As [`rows_x16`] asserts, with `out` valid at every index written.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn many_x16<const KIND: u8>(
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: *mut f32,
    ldo_w: usize,
    ldo_a: usize,
) {
    let gb = 16 * acts.nb * layout(KIND).0;
    for gi in 0..nrows / 16 {
        let wg = w.as_ptr().add(gi * gb);
        let o = out.add(gi * 16 * ldo_w);
        let mut k = 0;
        while k + 8 <= g {
            group_dot::<KIND, 8>(wg, acts, j0 + k, o.add(k * ldo_a), ldo_w, ldo_a);
            k += 8;
        }
        while k + 4 <= g {
            group_dot::<KIND, 4>(wg, acts, j0 + k, o.add(k * ldo_a), ldo_w, ldo_a);
            k += 4;
        }
        while k + 2 <= g {
            group_dot::<KIND, 2>(wg, acts, j0 + k, o.add(k * ldo_a), ldo_w, ldo_a);
            k += 2;
        }
        if k < g {
            group_dot::<KIND, 1>(wg, acts, j0 + k, o.add(k * ldo_a), ldo_w, ldo_a);
        }
    }
}

/// Packed blocks between the one multiplied and the one prefetched (several activation rows).
const PREFETCH_BLOCKS: usize = 16;

/// One group of 16 packed weight rows at `wg` against the `R` activation rows from `j0`: writes
/// `o[i * ldo_w + r * ldo_a]` for rows i < 16, r < R.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C must be available; `wg` must hold `acts.nb` packed blocks of
/// `KIND`; rows `j0..j0 + R` of `acts` must exist; `o` must be writable at every index written.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn group_dot<const KIND: u8, const R: usize>(
    wg: *const u8,
    acts: &Acts,
    j0: usize,
    o: *mut f32,
    ldo_w: usize,
    ldo_a: usize,
) {
    // Bytes of one packed block of 16 rows, the offset of its quants, its 64-byte chunks.
    let bb = 16 * layout(KIND).0;
    let qo = if KIND == Q41 { 64 } else { 32 };
    let nb = acts.nb;
    let (qs, ad) = (acts.qs.as_ptr(), acts.d.as_ptr());
    let (asum, as_) = (acts.sum.as_ptr(), acts.s.as_ptr());
    let low = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let p = wg.add(b * bb);
        if R >= 1 {
            // A block takes long enough with several rows that the hardware prefetcher falls
            // behind: ask for the weights PREFETCH_BLOCKS ahead (past the group's end too: the
            // next task usually takes the next group; prefetches never fault).
            let ahead = p.wrapping_add(PREFETCH_BLOCKS * bb);
            let mut off = 0;
            while off < bb {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off) as *const i8);
                off += 64;
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        // The 8 vectors of 16 lanes x 4 weights: elements 4c.. of each row in vector c.
        let mut v = [_mm512_setzero_si512(); 8];
        if KIND == Q80 {
            for (c, vc) in v.iter_mut().enumerate() {
                *vc = _mm512_loadu_si512(p.add(qo + 64 * c) as *const __m512i);
            }
        } else {
            for c in 0..4 {
                let x = _mm512_loadu_si512(p.add(qo + 64 * c) as *const __m512i);
                v[c] = _mm512_and_si512(x, low);
                v[c + 4] = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
            }
        }
        let mw = if KIND == Q41 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i))
        } else {
            _mm512_setzero_ps()
        };
        // One activation row: its 8 products per lane, the offset, the scales.
        let step = |r: usize, acc: __m512| -> __m512 {
            let ib = (j0 + r) * nb + b;
            let y = qs.add(ib * QK) as *const i32;
            let bc = |c: usize| _mm512_set1_epi32(y.add(c).read_unaligned());
            let mut s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], bc(0));
            let mut s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[1], bc(1));
            s0 = _mm512_dpbusd_epi32(s0, v[2], bc(2));
            s1 = _mm512_dpbusd_epi32(s1, v[3], bc(3));
            s0 = _mm512_dpbusd_epi32(s0, v[4], bc(4));
            s1 = _mm512_dpbusd_epi32(s1, v[5], bc(5));
            s0 = _mm512_dpbusd_epi32(s0, v[6], bc(6));
            s1 = _mm512_dpbusd_epi32(s1, v[7], bc(7));
            let mut s = _mm512_add_epi32(s0, s1);
            // The constant offset of the unsigned weights: 8 (Q4_0), 128 (Q8_0 stored as q + 128).
            let shift = match KIND {
                Q40 => 3,
                Q80 => 7,
                _ => 0,
            };
            if shift != 0 {
                s = _mm512_sub_epi32(s, _mm512_set1_epi32(*asum.add(ib) << shift));
            }
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*ad.add(ib)));
            let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc);
            if KIND == Q41 {
                _mm512_fmadd_ps(mw, _mm512_set1_ps(*as_.add(ib)), acc)
            } else {
                acc
            }
        };
        // Written out row by row (constant indices), so the accumulators stay in registers.
        acc[0] = step(0, acc[0]);
        if R >= 2 {
            acc[1] = step(1, acc[1]);
        }
        if R >= 4 {
            acc[2] = step(2, acc[2]);
            acc[3] = step(3, acc[3]);
        }
        if R >= 8 {
            acc[4] = step(4, acc[4]);
            acc[5] = step(5, acc[5]);
            acc[6] = step(6, acc[6]);
            acc[7] = step(7, acc[7]);
        }
    }
    for r in 0..R {
        if ldo_w == 1 {
            _mm512_storeu_ps(o.add(r * ldo_a), acc[r]);
        } else {
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r]);
            for (i, &x) in lanes.iter().enumerate() {
                *o.add(i * ldo_w + r * ldo_a) = x;
            }
        }
    }
}
