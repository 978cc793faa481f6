//! exp for the kernels' inner loops: f64 the exact libm function; f32 a branch-free version that
//! the compiler vectorizes (the libm call in a loop runs one element at a time).
//!
//! f32: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 split in two parts, so r is
//! exact); exp(r) by its Taylor series to r⁷ (truncation below 3e-9 relative); 2ⁿ built in the
//! exponent bits. Within 2 ulp of the exact value on [-87, 88]; 0 below -87 (exact: below 2e-38);
//! above 88 it stays at e^88 ≈ 1.65e38 (exact: larger, up to +inf).
//!
//! Also the row reductions the softmax-like kernels need, with eight partial results so that they
//! vectorize too (a single running sum or maximum is a serial chain).

use super::Float;

/// `e^x` for f32 without a library call (see the module docs for its accuracy).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 rounded to 16 significant bits: n · LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 - LN2_HI
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer in the low bits
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC; // round(x / ln 2) as a float
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32; // the same integer
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// Largest element (-inf for an empty slice; NaNs are skipped).
#[inline(always)]
pub fn max<F: Float>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(F::neg_infinity(), |m, &v| if v > m { v } else { m })
}

/// Σ f(x) over the slice, in eight interleaved partial sums.
#[inline(always)]
pub fn sum_by<F: Float, G: Fn(usize) -> F>(n: usize, f: G) -> F {
    let mut acc = [F::zero(); 8];
    let whole = n - n % 8;
    for j in (0..whole).step_by(8) {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += f(j + i);
        }
    }
    let tail = (whole..n).fold(F::zero(), |s, j| s + f(j));
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Σ f(x) over the slice in f64 (each term computed in `F`), in eight interleaved partial sums.
#[inline(always)]
pub fn sum_by_f64<F: Float, G: Fn(usize) -> F>(n: usize, f: G) -> f64 {
    let mut acc = [0f64; 8];
    let whole = n - n % 8;
    for j in (0..whole).step_by(8) {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += f(j + i).to_f64();
        }
    }
    let tail = (whole..n).fold(0f64, |s, j| s + f(j).to_f64());
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Σ e^(scale·x - shift) over the slice.
#[inline(always)]
pub fn exp_sum<F: Float>(x: &[F], scale: F, shift: F) -> F {
    let mut acc = [F::zero(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += (c[i] * scale - shift).vexp();
        }
    }
    let tail = rest
        .iter()
        .fold(F::zero(), |s, &v| s + (v * scale - shift).vexp());
    acc.iter().fold(tail, |s, &v| s + v)
}

/// x ← e^(scale·x - shift) in place; returns the sum of the new values.
#[inline(always)]
pub fn exp_in_place<F: Float>(x: &mut [F], scale: F, shift: F) -> F {
    let mut acc = [F::zero(); 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            let e = (c[i] * scale - shift).vexp();
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut tail = F::zero();
    for v in chunks.into_remainder() {
        *v = (*v * scale - shift).vexp();
        tail += *v;
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let exact = (x as f64).exp();
            let rel = ((exp_f32(x) as f64) - exact).abs() / exact;
            worst = worst.max(rel);
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
