//! NEON (aarch64) products of one weight row with activation rows, in two levels: with the
//! Armv8.2 dot-product instruction (`sdot`, 4 × four i8 products per i32 lane) where the CPU has
//! `dotprod`, and with widening multiplies (`smull`/`smlal` + `sadalp`) otherwise.
//!
//! 32-blocks: a weight block becomes two vectors of 16 signed bytes (nibbles or 5-bit values minus
//! the type's offset, Q4_1/Q5_1 values as they are, Q8_0 bytes as they are), multiplied with the
//! activation block into 4 i32 lanes, which are converted and scaled by `d_w d_x` into an f32
//! accumulator; Q4_1/Q5_1 add `m_w s_x`. One weight unpack serves up to four activation rows
//! (prefill). The integer sums are exactly the portable kernel's.
//!
//! K-quants: each super-block is decoded once with the portable decoder (shared by all activation
//! rows), and its 16 group dot products, their scales and the minimums' `bsums` products run in
//! NEON. The integer sums, and so the results, equal the portable kernel's bit for bit.
//!
//! F32/F16/BF16 rows, and the activation quantizer (bit-equal to the portable one), are here too.
//!
//! Two instructions go through `asm!`: `sdot` (`vdotq_s32` is still unstable in Rust 1.95) and
//! `fcvtl` (f16 → f32; `vcvt_f32_f16` is stable only from Rust 1.94, above the workspace's
//! `rust-version`). Both are base Armv8 encodings apart from `sdot`, which only runs in
//! functions compiled with `dotprod` and chosen after run-time detection.

// Index loops over the R activation rows touch several arrays per index.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::dequant::{decode_k, BlockK};
use super::formats::{round_f16, QType, QK, QK_K};
use super::quantize::Acts;

/// Whether this CPU runs the widening-multiply kernels (every aarch64 Linux CPU has NEON).
pub fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// Whether this CPU runs the `sdot` kernels.
pub fn dot_available() -> bool {
    available() && std::arch::is_aarch64_feature_detected!("dotprod")
}

fn check<const DOT: bool>() {
    if DOT {
        assert!(
            dot_available(),
            "NEON dotprod kernel called on a CPU without it"
        );
    } else {
        assert!(available(), "NEON kernel called on a CPU without it");
    }
}

const Q40: u8 = 0;
const Q41: u8 = 1;
const Q50: u8 = 2;
const Q51: u8 = 3;
const Q80: u8 = 4;

/// Block bytes and the offset of the packed low bits (Q8_0: the values) inside a block.
const fn layout(kind: u8) -> (usize, usize) {
    match kind {
        Q40 => (18, 2),
        Q41 => (20, 4),
        Q50 => (22, 6),
        Q51 => (24, 8),
        _ => (34, 2),
    }
}

/// `acc + Σ a_i b_i` in 4 lanes (which products land in which lane differs between the two
/// levels; only the total over the lanes is used).
///
/// Without `dotprod`, two products are summed in i16 before widening: both operands come from
/// weights in -128..=127 and activations in -127..=127 (`Acts`), so |sum| ≤ 2 · 128 · 127 < 2^15.
///
/// # Safety
/// With `DOT`, the caller must be compiled with `dotprod` and the CPU must have it.
#[inline(always)]
unsafe fn idot16<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    } else {
        let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p = vmlal_high_s8(p, a, b);
        vpadalq_s16(acc, p)
    }
}

/// Four f16 (bits) as f32 (`fcvtl`, exact, subnormals, infinities and NaNs included).
#[inline(always)]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl {o:v}.4s, {i:v}.4h",
        o = lateout(vreg) out,
        i = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// The upper four of eight f16 (bits) as f32 (`fcvtl2`).
#[inline(always)]
unsafe fn f16x8_high_to_f32(h: uint16x8_t) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl2 {o:v}.4s, {i:v}.8h",
        o = lateout(vreg) out,
        i = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// Eight f16 (bits) at `p` as two vectors of four f32.
///
/// # Safety
/// `p..p + 8` must be readable.
#[inline(always)]
pub(crate) unsafe fn load_f16x8(p: *const u16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p);
    (f16x4_to_f32(vget_low_u16(h)), f16x8_high_to_f32(h))
}

/// The f16 at `p` as f32.
///
/// # Safety
/// `p..p + 2` must be readable.
#[inline(always)]
unsafe fn h2f(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    vgetq_lane_f32::<0>(f16x4_to_f32(vdup_n_u16(h)))
}

/// The 32 weights of the block at `pb` as signed bytes (elements 0..16, 16..32), offsets removed.
///
/// # Safety
/// The block must be readable.
#[inline(always)]
unsafe fn unpack<const KIND: u8>(pb: *const u8) -> (int8x16_t, int8x16_t) {
    let qo = layout(KIND).1;
    if KIND == Q80 {
        let p = pb.add(qo) as *const i8;
        return (vld1q_s8(p), vld1q_s8(p.add(16)));
    }
    let q = vld1q_u8(pb.add(qo));
    let mut lo = vandq_u8(q, vdupq_n_u8(0x0f));
    let mut hi = vshrq_n_u8::<4>(q);
    if KIND == Q50 || KIND == Q51 {
        // qh bit i is the fifth bit of element i: byte k of qh covers elements 8k..8k + 8.
        // Spread byte k over lanes 8k.. (mod 16), test one bit per lane, keep 0x10 where set.
        const BYTE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let qh = (pb.add(qo - 4) as *const u32).read_unaligned();
        let hb = vreinterpretq_u8_u32(vdupq_n_u32(qh));
        let idx = vld1q_u8(BYTE.as_ptr());
        let bit = vld1q_u8(BIT.as_ptr());
        let h0 = vqtbl1q_u8(hb, idx);
        let h1 = vqtbl1q_u8(hb, vaddq_u8(idx, vdupq_n_u8(2)));
        let five = vdupq_n_u8(0x10);
        lo = vorrq_u8(lo, vandq_u8(vtstq_u8(h0, bit), five));
        hi = vorrq_u8(hi, vandq_u8(vtstq_u8(h1, bit), five));
    }
    let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
    match KIND {
        Q40 => (vsubq_s8(lo, vdupq_n_s8(8)), vsubq_s8(hi, vdupq_n_s8(8))),
        Q50 => (vsubq_s8(lo, vdupq_n_s8(16)), vsubq_s8(hi, vdupq_n_s8(16))),
        _ => (lo, hi),
    }
}

/// The product of one weight row `w` (`acts.nb` blocks of `KIND`) with the `R` activation rows
/// from `j0`.
///
/// # Safety
/// NEON (and with `DOT`, `dotprod`, in the caller's features) must be available; `w` must be
/// `acts.nb` blocks of `KIND`, and rows `j0..j0 + R` of `acts` must exist (all arrays sized as
/// `Acts::quantize` makes them).
#[inline(always)]
unsafe fn row_dot<const KIND: u8, const DOT: bool, const R: usize>(
    w: &[u8],
    acts: &Acts,
    j0: usize,
) -> [f32; R] {
    let bb = layout(KIND).0;
    let has_min = KIND == Q41 || KIND == Q51;
    let nb = acts.nb;
    let wp = w.as_ptr();
    let (qs, ad, as_) = (acts.qs.as_ptr(), acts.d.as_ptr(), acts.s.as_ptr());
    let zero = vdupq_n_s32(0);
    let mut acc = [vdupq_n_f32(0.0); R];
    let mut bias = [0f32; R];
    for b in 0..nb {
        let pb = wp.add(b * bb);
        let (w0, w1) = unpack::<KIND>(pb);
        let dw = h2f(pb);
        let mw = if has_min { h2f(pb.add(2)) } else { 0.0 };
        for r in 0..R {
            let ib = (j0 + r) * nb + b;
            let y = qs.add(ib * QK);
            let dp = idot16::<DOT>(zero, w0, vld1q_s8(y));
            let dp = idot16::<DOT>(dp, w1, vld1q_s8(y.add(16)));
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(dp), dw * *ad.add(ib));
            if has_min {
                bias[r] += mw * *as_.add(ib);
            }
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = vaddvq_f32(acc[r]) + bias[r];
    }
    out
}

/// The loop over weight rows and groups of activation rows of [`rows32`].
///
/// # Safety
/// As [`rows32`] asserts, plus the CPU features of `DOT`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn many<const KIND: u8, const DOT: bool>(
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
        while k + 4 <= g {
            o[k..k + 4].copy_from_slice(&row_dot::<KIND, DOT, 4>(wr, acts, j0 + k));
            k += 4;
        }
        while k < g {
            o[k] = row_dot::<KIND, DOT, 1>(wr, acts, j0 + k)[0];
            k += 1;
        }
    }
}

/// [`many`] compiled with `dotprod`.
///
/// # Safety
/// As [`rows32`] asserts; the CPU must have `dotprod`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon,dotprod")]
unsafe fn many_dot<const KIND: u8>(
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    many::<KIND, true>(w, nrows, acts, j0, g, out, ldo)
}

/// [`many`] with widening multiplies.
///
/// # Safety
/// As [`rows32`] asserts; the CPU must have NEON.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
unsafe fn many_neon<const KIND: u8>(
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    many::<KIND, false>(w, nrows, acts, j0, g, out, ldo)
}

/// `out[i * ldo + k] = w_i · x_{j0 + k}` for the `nrows` weight rows in `w` (32-blocks of type
/// `t`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the `g` activation rows from `j0`; with `sdot` when
/// `DOT`.
///
/// Panics if the CPU lacks the level or the sizes do not fit.
#[allow(clippy::too_many_arguments)]
pub fn rows32<const DOT: bool>(
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    check::<DOT>();
    assert_eq!(acts.block, QK);
    assert_eq!(w.len(), nrows * acts.nb * t.block_bytes());
    assert!(j0 + g <= acts.n);
    assert!(nrows == 0 || g == 0 || out.len() >= (nrows - 1) * ldo + g);
    assert!(acts.qs.len() >= acts.n * acts.nb * QK && acts.d.len() >= acts.n * acts.nb);
    assert!(acts.s.len() >= acts.n * acts.nb);
    macro_rules! go {
        ($kind:expr) => {
            if DOT {
                many_dot::<{ $kind }>(w, nrows, acts, j0, g, out, ldo)
            } else {
                many_neon::<{ $kind }>(w, nrows, acts, j0, g, out, ldo)
            }
        };
    }
    // SAFETY: the CPU features were checked above; `w` holds exactly `nrows` rows of `nb` blocks,
    // the activation arrays hold rows `j0..j0 + g`, and `out` holds every index written (asserted).
    unsafe {
        match t {
            QType::Q4_0 => go!(Q40),
            QType::Q4_1 => go!(Q41),
            QType::Q5_0 => go!(Q50),
            QType::Q5_1 => go!(Q51),
            QType::Q8_0 => go!(Q80),
            _ => panic!("rows32: {t} is not a 32-block type"),
        }
    }
}

/// `out[k] = w · x_{j0 + k}` for a row of K super-blocks of type `t` (Q2_K..Q6_K) against
/// `acts` (Q8_K); with `sdot` when `DOT`.
///
/// Panics if the CPU lacks the level or the sizes do not fit.
pub fn row_k<const DOT: bool>(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    check::<DOT>();
    assert!(t.is_k_quant());
    assert_eq!(acts.block, QK_K);
    assert_eq!(w.len(), acts.nb * t.block_bytes());
    assert!(j0 + out.len() <= acts.n);
    assert!(acts.qs.len() >= acts.n * acts.nb * QK_K && acts.d.len() >= acts.n * acts.nb);
    assert!(acts.bsums.len() >= acts.n * acts.nb * 16);
    // SAFETY: the CPU features were checked; the sizes the kernel reads were asserted.
    unsafe {
        if DOT {
            row_k_dot(t, w, acts, j0, out)
        } else {
            row_k_neon(t, w, acts, j0, out)
        }
    }
}

/// # Safety
/// As [`row_k`] asserts; the CPU must have `dotprod`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn row_k_dot(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    row_k_impl::<true>(t, w, acts, j0, out)
}

/// # Safety
/// As [`row_k`] asserts; the CPU must have NEON.
#[target_feature(enable = "neon")]
unsafe fn row_k_neon(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    row_k_impl::<false>(t, w, acts, j0, out)
}

/// # Safety
/// As [`row_k`] asserts, plus the CPU features of `DOT`.
#[inline(always)]
unsafe fn row_k_impl<const DOT: bool>(t: QType, w: &[u8], acts: &Acts, j0: usize, out: &mut [f32]) {
    let (nb, bb) = (acts.nb, t.block_bytes());
    let mut k = BlockK::default();
    out.iter_mut().for_each(|o| *o = 0.0);
    let zero = vdupq_n_s32(0);
    for b in 0..nb {
        decode_k(t, &w[b * bb..(b + 1) * bb], &mut k);
        let (sp, mp, qp) = (k.scale.as_ptr(), k.min.as_ptr(), k.q.as_ptr());
        let sc = [0, 4, 8, 12].map(|i| vld1q_s32(sp.add(i)));
        let mn = [0, 4, 8, 12].map(|i| vld1q_s32(mp.add(i)));
        let wq: [int8x16_t; 16] = core::array::from_fn(|g| vld1q_s8(qp.add(16 * g)));
        for (i, o) in out.iter_mut().enumerate() {
            let ib = (j0 + i) * nb + b;
            let y = acts.qs.as_ptr().add(ib * QK_K);
            let bs = acts.bsums.as_ptr().add(ib * 16);
            let mut isum = zero;
            let mut imin = zero;
            for q in 0..4 {
                // The four group sums of groups 4q..4q + 4, in lanes 0..4.
                // (Plain calls, no closure: `sdot` needs this function's target features.)
                let gi = 4 * q;
                let g0 = idot16::<DOT>(zero, wq[gi], vld1q_s8(y.add(16 * gi)));
                let g1 = idot16::<DOT>(zero, wq[gi + 1], vld1q_s8(y.add(16 * gi + 16)));
                let g2 = idot16::<DOT>(zero, wq[gi + 2], vld1q_s8(y.add(16 * gi + 32)));
                let g3 = idot16::<DOT>(zero, wq[gi + 3], vld1q_s8(y.add(16 * gi + 48)));
                let s = vpaddq_s32(vpaddq_s32(g0, g1), vpaddq_s32(g2, g3));
                isum = vmlaq_s32(isum, s, sc[q]);
                imin = vmlaq_s32(imin, vld1q_s32(bs.add(4 * q)), mn[q]);
            }
            let (isum, imin) = (vaddvq_s32(isum), vaddvq_s32(imin));
            let dx = *acts.d.get_unchecked(ib);
            *o += (k.d * dx) * isum as f32 - (k.dmin * dx) * imin as f32;
        }
    }
}

/// Quantize whole 32-blocks of `x` to Q8, bit-equal to the portable `quantize_blocks32`
/// (`vcvtnq` rounds to nearest even, as its `round_even`).
///
/// Panics if the CPU lacks NEON or an output is too short.
pub fn quantize32(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32]) {
    assert!(available(), "NEON kernel called on a CPU without it");
    let nb = x.len() / QK;
    assert!(qs.len() >= nb * QK && d.len() >= nb && s.len() >= nb && sum.len() >= nb);
    // SAFETY: NEON was checked; the callee reads `nb` whole blocks of `x` and writes `nb` blocks
    // of `qs` and `nb` entries of the others (asserted).
    unsafe { quantize32_neon(x, nb, qs, d, s, sum) }
}

/// # Safety
/// As [`quantize32`] asserts.
#[target_feature(enable = "neon")]
unsafe fn quantize32_neon(
    x: &[f32],
    nb: usize,
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    sum: &mut [i32],
) {
    for b in 0..nb {
        let xp = x.as_ptr().add(b * QK);
        let v: [float32x4_t; 8] = core::array::from_fn(|i| vld1q_f32(xp.add(4 * i)));
        // maxNum, as f32::max: a NaN does not win.
        let mut m = vabsq_f32(v[0]);
        for vi in &v[1..] {
            m = vmaxnmq_f32(m, vabsq_f32(*vi));
        }
        let amax = vmaxnmvq_f32(m);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let q: [int32x4_t; 8] = core::array::from_fn(|i| vcvtnq_s32_f32(vmulq_n_f32(v[i], id)));
        let mut tot = q[0];
        for qi in &q[1..] {
            tot = vaddq_s32(tot, *qi);
        }
        let h: [int16x8_t; 4] =
            core::array::from_fn(|i| vcombine_s16(vmovn_s32(q[2 * i]), vmovn_s32(q[2 * i + 1])));
        let qp = qs.as_mut_ptr().add(b * QK);
        vst1q_s8(qp, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
        vst1q_s8(qp.add(16), vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])));
        let total = vaddvq_s32(tot);
        let dd = amax / 127.0;
        *d.get_unchecked_mut(b) = round_f16(dd);
        *s.get_unchecked_mut(b) = round_f16(dd * total as f32);
        *sum.get_unchecked_mut(b) = total;
    }
}

/// `w · x` for a row of F32, F16 or BF16 weights (`w` holds exactly `x.len()` elements).
pub fn row_float(t: QType, w: &[u8], x: &[f32]) -> f32 {
    assert!(available(), "NEON kernel called on a CPU without it");
    let size = if t == QType::F32 { 4 } else { 2 };
    assert_eq!(w.len(), x.len() * size);
    // SAFETY: NEON was checked; `w` holds `x.len()` elements of `t` (asserted).
    unsafe { row_float_neon(t, w, x) }
}

/// # Safety
/// NEON must be available; `w` must hold `x.len()` elements of type `t`.
#[target_feature(enable = "neon")]
unsafe fn row_float_neon(t: QType, w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (w0, w1) = load_w8(t, wp, i);
        let (w2, w3) = load_w8(t, wp, i + 8);
        a[0] = vfmaq_f32(a[0], w0, vld1q_f32(xp.add(i)));
        a[1] = vfmaq_f32(a[1], w1, vld1q_f32(xp.add(i + 4)));
        a[2] = vfmaq_f32(a[2], w2, vld1q_f32(xp.add(i + 8)));
        a[3] = vfmaq_f32(a[3], w3, vld1q_f32(xp.add(i + 12)));
        i += 16;
    }
    let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
    if i < n {
        let size = if t == QType::F32 { 4 } else { 2 };
        s += super::dot_scalar::row_float(t, &w[i * size..], &x[i..]);
    }
    s
}

/// 8 weights from element `i` of a float row, as f32.
///
/// # Safety
/// Elements `i..i + 8` of the row at `wp` must be readable.
#[inline(always)]
unsafe fn load_w8(t: QType, wp: *const u8, i: usize) -> (float32x4_t, float32x4_t) {
    match t {
        QType::F16 => load_f16x8(wp.add(2 * i) as *const u16),
        QType::BF16 => {
            let h = vld1q_u16(wp.add(2 * i) as *const u16);
            (
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            )
        }
        _ => {
            let p = wp.add(4 * i) as *const f32;
            (vld1q_f32(p), vld1q_f32(p.add(4)))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every kernel here against the portable one, at both levels (the `sdot` one where the CPU
    //! has it), directly (the product driver and its tests are in `tests/quant.rs`).

    use super::super::dot_scalar;
    use super::super::formats::f16_bits;
    use super::super::quantize::{quantize, quantize_blocks32};
    use super::*;

    /// A small deterministic generator (xorshift).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn f(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn dots() -> Vec<bool> {
        let mut v = vec![false];
        if dot_available() {
            v.push(true);
        }
        v
    }

    /// Random blocks with sane f16 scales (random bytes could be NaN or infinite).
    fn blocks(g: &mut Gen, t: QType, elems: usize) -> Vec<u8> {
        let mut b = g.bytes(t.bytes_for(elems).unwrap());
        for blk in b.chunks_exact_mut(t.block_bytes()) {
            for &o in t.f16_scale_offsets() {
                blk[o..o + 2].copy_from_slice(&f16_bits(g.f() * 0.1));
            }
        }
        b
    }

    fn close(what: &str, got: &[f32], want: &[f32]) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what} [{i}]: {a} vs {b}"
            );
        }
    }

    #[test]
    fn neon_is_available_on_aarch64() {
        assert!(available());
    }

    #[test]
    fn idot16_is_exact_at_the_extremes() {
        // Weights -128 (Q8_0 allows it) against activations ±127: the widening path's i16 pair
        // sums reach 2 · 128 · 127.
        for dot in dots() {
            for (a, b) in [(-128i8, 127i8), (-128, -127), (127, 127), (-1, 1)] {
                // SAFETY: NEON is part of every aarch64 target; `dot_fn` (sdot) runs only when
                // `dots()` found dotprod.
                let r = unsafe {
                    let (va, vb) = (vdupq_n_s8(a), vdupq_n_s8(b));
                    let z = vdupq_n_s32(0);
                    if dot {
                        dot_fn(z, va, vb)
                    } else {
                        vaddvq_s32(idot16::<false>(z, va, vb))
                    }
                };
                assert_eq!(r, 16 * a as i32 * b as i32, "dot={dot} {a}·{b}");
            }
        }
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_fn(z: int32x4_t, a: int8x16_t, b: int8x16_t) -> i32 {
        vaddvq_s32(idot16::<true>(z, a, b))
    }

    #[test]
    fn rows32_equal_the_portable_kernel() {
        let mut g = Gen(0x9e3779b97f4a7c15);
        // 1, 3 and 18 blocks; 1, 4 and 7 activation rows (the 4-row path and the single rows).
        for (nb, n) in [(1, 1), (3, 4), (18, 7)] {
            let cols = nb * QK;
            let x: Vec<f32> = (0..n * cols).map(|_| g.f()).collect();
            let mut acts = Acts::default();
            acts.quantize(&x, n, cols, QK);
            for t in [
                QType::Q4_0,
                QType::Q4_1,
                QType::Q5_0,
                QType::Q5_1,
                QType::Q8_0,
            ] {
                let rows = 3;
                let w = blocks(&mut g, t, rows * cols);
                let rb = nb * t.block_bytes();
                let mut want = vec![0f32; rows * n];
                for r in 0..rows {
                    dot_scalar::row32(
                        t,
                        &w[r * rb..(r + 1) * rb],
                        &acts,
                        0,
                        &mut want[r * n..][..n],
                    );
                }
                for dot in dots() {
                    let mut got = vec![0f32; rows * n];
                    if dot {
                        rows32::<true>(t, &w, rows, &acts, 0, n, &mut got, n);
                    } else {
                        rows32::<false>(t, &w, rows, &acts, 0, n, &mut got, n);
                    }
                    close(&format!("{t} dot={dot} nb={nb}"), &got, &want);
                }
            }
        }
    }

    #[test]
    fn row_k_equals_the_portable_kernel_exactly() {
        let mut g = Gen(7);
        let (nb, n) = (3, 5);
        let cols = nb * QK_K;
        let x: Vec<f32> = (0..n * cols).map(|_| g.f()).collect();
        let mut acts = Acts::default();
        acts.quantize(&x, n, cols, QK_K);
        for t in [QType::Q2K, QType::Q3K, QType::Q4K, QType::Q5K, QType::Q6K] {
            let w = blocks(&mut g, t, cols);
            let mut want = vec![0f32; n - 1];
            dot_scalar::row_k(t, &w, &acts, 1, &mut want);
            for dot in dots() {
                let mut got = vec![0f32; n - 1];
                if dot {
                    row_k::<true>(t, &w, &acts, 1, &mut got);
                } else {
                    row_k::<false>(t, &w, &acts, 1, &mut got);
                }
                assert_eq!(got, want, "{t} dot={dot}");
            }
        }
    }

    #[test]
    fn quantize32_is_bit_equal_to_the_portable_quantizer() {
        let mut g = Gen(11);
        let nb = 9;
        let mut x: Vec<f32> = (0..nb * QK).map(|_| g.f() * 3.0).collect();
        // A zero block, a block with ties (x · 127 / amax = k + 0.5), a tiny block.
        x[QK..2 * QK].iter_mut().for_each(|v| *v = 0.0);
        for (i, v) in x[2 * QK..3 * QK].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) + 0.5;
        }
        x[2 * QK] = 127.0;
        x[3 * QK..4 * QK].iter_mut().for_each(|v| *v *= 1e-30);
        let (mut q1, mut d1, mut s1, mut m1) = (
            vec![0i8; nb * QK],
            vec![0f32; nb],
            vec![0f32; nb],
            vec![0i32; nb],
        );
        let (mut q2, mut d2, mut s2, mut m2) = (q1.clone(), d1.clone(), s1.clone(), m1.clone());
        quantize32(&x, &mut q1, &mut d1, &mut s1, &mut m1);
        quantize_blocks32(&x, &mut q2, &mut d2, &mut s2, &mut m2);
        assert_eq!(q1, q2);
        assert_eq!(d1, d2);
        assert_eq!(s1, s2);
        assert_eq!(m1, m2);
    }

    #[test]
    fn row_float_matches_the_portable_kernel() {
        let mut g = Gen(13);
        for n in [5, 16, 100, 515] {
            let x: Vec<f32> = (0..n).map(|_| g.f()).collect();
            let wf: Vec<f32> = (0..n).map(|_| g.f()).collect();
            for t in [QType::F32, QType::F16, QType::BF16] {
                let w = quantize(t, &wf).unwrap();
                let want = dot_scalar::row_float(t, &w, &x);
                let scale: f32 = wf.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                let got = row_float(t, &w, &x);
                assert!(
                    (got - want).abs() <= 1e-5 * scale + 1e-6,
                    "{t} n={n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn f16_conversion_is_exact() {
        // Every f16 bit pattern, eight at a time, against the `half` crate (NaNs: both NaN).
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for c in all.chunks_exact(8) {
            // SAFETY: `c` holds exactly the 8 halves the load reads; NEON is always present.
            let (a, b) = unsafe { load_f16x8(c.as_ptr()) };
            let mut got = [0f32; 8];
            // SAFETY: `got` has room for the 2 × 4 floats stored.
            unsafe {
                vst1q_f32(got.as_mut_ptr(), a);
                vst1q_f32(got.as_mut_ptr().add(4), b);
            }
            for (&h, &v) in c.iter().zip(&got) {
                let want = half::f16::from_bits(h).to_f32();
                assert!(
                    v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()),
                    "{h:#06x}: {v} vs {want}"
                );
            }
        }
    }
}
