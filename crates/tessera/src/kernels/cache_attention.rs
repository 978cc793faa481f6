//! Attention of new queries over a key/value cache on plain slices: f32 caches, and f16 caches
//! (half the memory traffic; llama.cpp's roundings) with AVX2/AVX-512/NEON kernels picked at run
//! time. Plus the vector helpers of the per-token inference path.

use super::softmax::softmax_row;

/// `a += b`, element-wise.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Dot product with 16 independent lanes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// `y += a * x`, element-wise.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// One query head against the first `len` cached positions of its key/value head:
/// `out = softmax(q·K^T * scale) V`. `k` and `v` are (capacity, d) row-major; `scores` holds at
/// least `len` values.
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_biased(q, k, v, len, scale, |_| 0.0, scores, out);
}

/// [`attend`] with an additive bias on the score of each key position `t` (T5's relative
/// positions): `out = softmax(q·K^T * scale + bias(t)) V`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn attend_biased(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    scale: f32,
    bias: impl Fn(usize) -> f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q.len();
    let scores = &mut scores[..len];
    for (t, s) in scores.iter_mut().enumerate() {
        *s = dot(q, &k[t * d..(t + 1) * d]) * scale + bias(t);
    }
    softmax_row(scores, 1.0);
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        axpy(out, p, &v[t * d..(t + 1) * d]);
    }
}

/// `x` rounded to f16 (nearest, ties to even) and stored as its bits: F16C's conversion on x86
/// (both SIMD levels have it; 8 values per instruction), the `half` crate's elsewhere. The K/V
/// rows of every decoded token and the f16 queries pass through here.
pub fn to_f16(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len(), "to_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::quant::SimdLevel::detect() != crate::kernels::quant::SimdLevel::Scalar {
        return f16x86::to_f16(x, out);
    }
    to_f16_portable(x, out);
}

fn to_f16_portable(x: &[f32], out: &mut [u16]) {
    use half::slice::HalfFloatSliceExt;
    let out: &mut [half::f16] = bytemuck_f16(out);
    out.convert_from_f32_slice(x);
}

fn bytemuck_f16(x: &mut [u16]) -> &mut [half::f16] {
    // SAFETY: f16 is a transparent u16.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
}

/// A whole head's attention over an f16 cache (`attend_f16`'s arguments, minus the kernels).
type AttendFn = fn(&[u16], &[u16], &[u16], usize, f32, &mut [f32], &mut [f32]);

/// The f16 kernels of attention over an f16 KV cache, per SIMD level.
#[derive(Clone, Copy)]
pub struct F16Kernels {
    dot: fn(&[u16], &[u16]) -> f32,
    axpy: fn(&mut [f32], f32, &[u16]),
    /// A fused kernel for a whole head, for head sizes it handles (multiples of 16 up to 128).
    fused: Option<AttendFn>,
}

impl F16Kernels {
    /// The fastest kernels this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::quant::SimdLevel::detect() != crate::kernels::quant::SimdLevel::Scalar {
            // Both x86 levels include F16C, AVX2 and FMA.
            let fused: Option<AttendFn> = if crate::kernels::quant::SimdLevel::detect()
                == crate::kernels::quant::SimdLevel::Avx512Vnni
            {
                Some(f16x86::attend512)
            } else {
                None
            };
            return F16Kernels {
                dot: f16x86::dot,
                axpy: f16x86::axpy,
                fused,
            };
        }
        #[cfg(target_arch = "aarch64")]
        if crate::kernels::quant::SimdLevel::detect() != crate::kernels::quant::SimdLevel::Scalar {
            // Both NEON levels: f16 → f32 with `fcvtl`, products with FMA.
            return F16Kernels {
                dot: f16neon::dot,
                axpy: f16neon::axpy,
                fused: None,
            };
        }
        F16Kernels {
            dot: dot_f16_scalar,
            axpy: axpy_f16_scalar,
            fused: None,
        }
    }

    /// What [`F16Kernels::detect`] picks, in words (for `tessera info --system`).
    pub fn describe() -> &'static str {
        let simd = crate::kernels::quant::SimdLevel::detect();
        if Self::detect().fused.is_some() {
            "AVX-512 fused (scores, softmax and weighted sum in one pass over f16 rows)"
        } else if simd == crate::kernels::quant::SimdLevel::Scalar {
            "portable"
        } else if cfg!(target_arch = "aarch64") {
            "NEON (f16 rows widened to f32)"
        } else {
            "AVX2 + F16C"
        }
    }

    /// The portable kernels (the reference the SIMD ones are tested against).
    pub fn portable() -> Self {
        F16Kernels {
            dot: dot_f16_scalar,
            axpy: axpy_f16_scalar,
            fused: None,
        }
    }
}

fn f16(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

/// Portable `Σ a_i b_i` of two f16 vectors, in f32.
pub fn dot_f16_scalar(a: &[u16], b: &[u16]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| f16(x) * f16(y)).sum()
}

/// Portable `y += a * x` with `x` in f16.
pub fn axpy_f16_scalar(y: &mut [f32], a: f32, x: &[u16]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * f16(v);
    }
}

#[cfg(target_arch = "x86_64")]
mod f16x86 {
    use std::arch::x86_64::*;

    /// [`super::to_f16`] with F16C (the caller checked the SIMD level; lengths are equal).
    pub fn to_f16(x: &[f32], out: &mut [u16]) {
        assert_eq!(x.len(), out.len());
        // SAFETY: only called when AVX2/F16C are present; loads and stores stay inside the
        // slices (8 at a time, then the tail one by one).
        unsafe { to_f16_f16c(x, out) }
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn to_f16_f16c(x: &[f32], out: &mut [u16]) {
        let n = x.len();
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), h);
            i += 8;
        }
        super::to_f16_portable(&x[i..], &mut out[i..]);
    }

    pub fn dot(a: &[u16], b: &[u16]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: only selected when AVX2/FMA/F16C are present (F16Kernels::detect); loads stay
        // within the slices (8 at a time, then the scalar tail).
        unsafe { dot_avx2(a, b) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_avx2(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len();
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let a0 = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i).cast()));
            let b0 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i).cast()));
            let a1 = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i + 8).cast()));
            let b1 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8).cast()));
            s0 = _mm256_fmadd_ps(a0, b0, s0);
            s1 = _mm256_fmadd_ps(a1, b1, s1);
            i += 16;
        }
        let s = _mm256_add_ps(s0, s1);
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        let mut sum = _mm_cvtss_f32(h);
        while i < n {
            sum += super::f16(a[i]) * super::f16(b[i]);
            i += 1;
        }
        sum
    }

    /// [`super::attend_f16`] for one head of `d` = 16·m ≤ 128, with the query and the output
    /// held in registers across all positions.
    pub fn attend512(
        q16: &[u16],
        k: &[u16],
        v: &[u16],
        len: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let d = q16.len();
        assert!(d.is_multiple_of(16) && d <= 128 && out.len() == d);
        assert!(k.len() >= len * d && v.len() >= len * d && scores.len() >= len);
        // SAFETY: AVX-512 is checked by F16Kernels::detect; all reads are within the slices
        // (asserted above: `len` rows of `d`).
        unsafe {
            scores512(q16, k, len, scale, scores);
            super::softmax_row(&mut scores[..len], 1.0);
            weighted512(&scores[..len], v, out);
        }
    }

    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn scores512(q16: &[u16], k: &[u16], len: usize, scale: f32, scores: &mut [f32]) {
        let m = q16.len() / 16;
        let mut q = [_mm512_setzero_ps(); 8];
        for (j, r) in q.iter_mut().enumerate().take(m) {
            *r = _mm512_cvtph_ps(_mm256_loadu_si256(q16.as_ptr().add(16 * j).cast()));
        }
        for (t, s) in scores.iter_mut().enumerate().take(len) {
            let row = k.as_ptr().add(t * 16 * m);
            let mut acc = _mm512_setzero_ps();
            for (j, &qj) in q.iter().enumerate().take(m) {
                let kv = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * j).cast()));
                acc = _mm512_fmadd_ps(qj, kv, acc);
            }
            *s = _mm512_reduce_add_ps(acc) * scale;
        }
    }

    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn weighted512(p: &[f32], v: &[u16], out: &mut [f32]) {
        let m = out.len() / 16;
        let mut acc = [_mm512_setzero_ps(); 8];
        for (t, &pt) in p.iter().enumerate() {
            // The weight rounded to f16, as ggml converts it for the f16 product.
            let w = _mm512_set1_ps(half::f16::from_f32(pt).to_f32());
            let row = v.as_ptr().add(t * 16 * m);
            for (j, a) in acc.iter_mut().enumerate().take(m) {
                let vv = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * j).cast()));
                *a = _mm512_fmadd_ps(w, vv, *a);
            }
        }
        for (j, a) in acc.iter().enumerate().take(m) {
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), *a);
        }
    }

    pub fn axpy(y: &mut [f32], c: f32, x: &[u16]) {
        assert_eq!(y.len(), x.len());
        // SAFETY: as for `dot`.
        unsafe { axpy_avx2(y, c, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn axpy_avx2(y: &mut [f32], c: f32, x: &[u16]) {
        let n = y.len();
        let cv = _mm256_set1_ps(c);
        let mut i = 0;
        while i + 8 <= n {
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast()));
            let p = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(cv, xv, _mm256_loadu_ps(p)));
            i += 8;
        }
        while i < n {
            y[i] += c * super::f16(x[i]);
            i += 1;
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod f16neon {
    use crate::kernels::quant::dot_neon::load_f16x8;
    use std::arch::aarch64::*;

    pub fn dot(a: &[u16], b: &[u16]) -> f32 {
        assert_eq!(a.len(), b.len());
        assert!(crate::kernels::quant::dot_neon::available());
        // SAFETY: NEON was checked; loads stay within the slices (8 at a time, then the scalar
        // tail).
        unsafe { dot_neon(a, b) }
    }

    #[target_feature(enable = "neon")]
    unsafe fn dot_neon(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len();
        let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut i = 0;
        while i + 8 <= n {
            let (a0, a1) = load_f16x8(a.as_ptr().add(i));
            let (b0, b1) = load_f16x8(b.as_ptr().add(i));
            s0 = vfmaq_f32(s0, a0, b0);
            s1 = vfmaq_f32(s1, a1, b1);
            i += 8;
        }
        let mut sum = vaddvq_f32(vaddq_f32(s0, s1));
        while i < n {
            sum += super::f16(a[i]) * super::f16(b[i]);
            i += 1;
        }
        sum
    }

    pub fn axpy(y: &mut [f32], c: f32, x: &[u16]) {
        assert_eq!(y.len(), x.len());
        assert!(crate::kernels::quant::dot_neon::available());
        // SAFETY: as for `dot`.
        unsafe { axpy_neon(y, c, x) }
    }

    #[target_feature(enable = "neon")]
    unsafe fn axpy_neon(y: &mut [f32], c: f32, x: &[u16]) {
        let n = y.len();
        let cv = vdupq_n_f32(c);
        let mut i = 0;
        while i + 8 <= n {
            let (x0, x1) = load_f16x8(x.as_ptr().add(i));
            let p = y.as_mut_ptr().add(i);
            vst1q_f32(p, vfmaq_f32(vld1q_f32(p), cv, x0));
            vst1q_f32(p.add(4), vfmaq_f32(vld1q_f32(p.add(4)), cv, x1));
            i += 8;
        }
        while i < n {
            y[i] += c * super::f16(x[i]);
            i += 1;
        }
    }
}

/// One query head against the first `len` positions of an f16 KV cache, with llama.cpp's
/// roundings: the query and the attention weights are rounded to f16 before their products
/// (as ggml converts the f32 operand of an f16 matrix product), sums in f32.
/// `q16` is the f16 query; `k`, `v` are (capacity, d); `scores` holds at least `len` values.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    kern: F16Kernels,
    q16: &[u16],
    k: &[u16],
    v: &[u16],
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q16.len();
    if let Some(f) = kern.fused {
        if d.is_multiple_of(16) && d <= 128 {
            return f(q16, k, v, len, scale, scores, out);
        }
    }
    let scores = &mut scores[..len];
    for (t, s) in scores.iter_mut().enumerate() {
        *s = (kern.dot)(q16, &k[t * d..(t + 1) * d]) * scale;
    }
    softmax_row(scores, 1.0);
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        let p = half::f16::from_f32(p).to_f32();
        (kern.axpy)(out, p, &v[t * d..(t + 1) * d]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_f16_rounds_as_the_portable_conversion() {
        // Ties, subnormals, overflow to infinity, signed zeros, infinities: the same bits.
        let mut x: Vec<f32> = (0..4099)
            .map(|i| (i as f32 * 0.7331).sin() * 2f32.powi(i % 40 - 28))
            .collect();
        x.extend([
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            65520.0,
            1e6,
            -0.0,
        ]);
        x.extend([f32::INFINITY, f32::NEG_INFINITY, 5.96e-8, 2.9e-8, -6.1e-5]);
        let (mut fast, mut portable) = (vec![0u16; x.len()], vec![0u16; x.len()]);
        to_f16(&x, &mut fast);
        to_f16_portable(&x, &mut portable);
        assert_eq!(fast, portable);
        to_f16(&x[..5], &mut fast[..5]);
        assert_eq!(fast, portable);
    }

    #[test]
    fn f16_kernels_match_the_portable_ones() {
        let n = 67;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut a16, mut b16) = (vec![0u16; n], vec![0u16; n]);
        to_f16(&a, &mut a16);
        to_f16(&b, &mut b16);
        let k = F16Kernels::detect();
        let want = dot_f16_scalar(&a16, &b16);
        assert!(((k.dot)(&a16, &b16) - want).abs() < 1e-4);
        let (mut y1, mut y2) = (a.clone(), a.clone());
        (k.axpy)(&mut y1, 0.3, &b16);
        axpy_f16_scalar(&mut y2, 0.3, &b16);
        for (x, y) in y1.iter().zip(&y2) {
            assert!((x - y).abs() < 1e-6);
        }
        // f16 attention equals f32 attention on the rounded inputs, up to the weights' rounding.
        let d = 8;
        let q: Vec<f32> = (0..d).map(|i| i as f32 * 0.1).collect();
        let kk: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.3).sin()).collect();
        let vv: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.2).cos()).collect();
        let (mut q16, mut k16, mut v16) = (vec![0u16; d], vec![0u16; 3 * d], vec![0u16; 3 * d]);
        to_f16(&q, &mut q16);
        to_f16(&kk, &mut k16);
        to_f16(&vv, &mut v16);
        let (mut s1, mut o1, mut s2, mut o2) = ([0f32; 3], vec![0f32; d], [0f32; 3], vec![0f32; d]);
        attend_f16(k, &q16, &k16, &v16, 3, 0.5, &mut s1, &mut o1);
        attend(&q, &kk, &vv, 3, 0.5, &mut s2, &mut o2);
        for (x, y) in o1.iter().zip(&o2) {
            assert!((x - y).abs() < 2e-3, "{x} {y}");
        }
    }

    #[test]
    fn fused_attention_matches_the_portable_kernels() {
        let (d, len) = (64, 37);
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.13).sin()).collect();
        let kk: Vec<f32> = (0..len * d).map(|i| (i as f32 * 0.31).sin()).collect();
        let vv: Vec<f32> = (0..len * d).map(|i| (i as f32 * 0.07).cos()).collect();
        let (mut q16, mut k16, mut v16) = (vec![0u16; d], vec![0u16; len * d], vec![0u16; len * d]);
        to_f16(&q, &mut q16);
        to_f16(&kk, &mut k16);
        to_f16(&vv, &mut v16);
        let (mut s1, mut o1) = (vec![0f32; len], vec![0f32; d]);
        let (mut s2, mut o2) = (vec![0f32; len], vec![0f32; d]);
        attend_f16(
            F16Kernels::detect(),
            &q16,
            &k16,
            &v16,
            len,
            0.125,
            &mut s1,
            &mut o1,
        );
        attend_f16(
            F16Kernels::portable(),
            &q16,
            &k16,
            &v16,
            len,
            0.125,
            &mut s2,
            &mut o2,
        );
        for (x, y) in o1.iter().zip(&o2) {
            assert!((x - y).abs() < 1e-5, "{x} {y}");
        }
    }

    #[test]
    fn attend_is_a_weighted_mean_of_values() {
        let d = 4;
        let q = [1.0, 0.0, 0.0, 0.0];
        let k = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0, 9.0];
        let mut scores = [0f32; 3];
        let mut out = [0f32; 4];
        attend(&q, &k, &v, 2, 1.0, &mut scores, &mut out);
        let (a, b) = (1f32.exp(), (-1f32).exp());
        let (pa, pb) = (a / (a + b), b / (a + b));
        for i in 0..d {
            assert!((out[i] - (pa * v[i] + pb * v[4 + i])).abs() < 1e-6);
        }
    }
}
