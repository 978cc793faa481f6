//! Rotary position embedding on plain slices, in Hugging Face's half-split layout: within a head
//! of size D, element `i` and element `i + D/2` form a pair rotated by the angle
//! `pos · θ^(−2i/D)`. GGUF files store the rows of `attn_q` / `attn_k` interleaved for llama.cpp's
//! adjacent-pair rotation; loaders un-permute them ([`gguf_row`]), so every path uses this one
//! layout.

/// The frequencies `θ^(−2i/D)` for `i < D/2`, computed in f32 as transformers does
/// (`1 / base ** (arange(0, D, 2) / D)`).
pub fn inv_freqs(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// The cosines and sines of position `pos`: `cs[..D/2]` = cos, `cs[D/2..]` = sin.
pub fn angles(pos: usize, freqs: &[f32], cs: &mut [f32]) {
    let h = freqs.len();
    for (i, &f) in freqs.iter().enumerate() {
        let a = pos as f32 * f;
        cs[i] = a.cos();
        cs[h + i] = a.sin();
    }
}

/// The cosines and sines of position `pos` as llama.cpp computes them (for models read from
/// GGUF, whose reference is llama.cpp): the angle of pair `i` is `pos · s^i` with
/// `s = θ^(−2/D)` in f32, built by repeated multiplication (`angle *= s`), not from a table of
/// powers. The two differ in the last bits, which 30 layers amplify near ties.
pub fn angles_ggml(pos: usize, head_dim: usize, theta: f64, cs: &mut [f32]) {
    let h = head_dim / 2;
    let scale = (theta as f32).powf(-2.0 / head_dim as f32);
    let mut a = pos as f32;
    for i in 0..h {
        cs[i] = a.cos();
        cs[h + i] = a.sin();
        a *= scale;
    }
}

/// Rotate every head (of `d` values) of `x` by the angles `cs` (from [`angles`]).
pub fn rotate(x: &mut [f32], d: usize, cs: &[f32]) {
    let h = d / 2;
    let (cos, sin) = cs.split_at(h);
    for head in x.chunks_exact_mut(d) {
        let (a, b) = head.split_at_mut(h);
        for i in 0..h {
            let (x0, x1) = (a[i], b[i]);
            a[i] = x0 * cos[i] - x1 * sin[i];
            b[i] = x1 * cos[i] + x0 * sin[i];
        }
    }
}

/// The Hugging Face row of GGUF row `r` of a rotary projection with heads of size `d`: GGUF row
/// `h·d + 2i + j` is row `h·d + j·d/2 + i` (`j` ∈ {0, 1}).
pub fn gguf_row(r: usize, d: usize) -> usize {
    let (h, k) = (r / d, r % d);
    h * d + (k % 2) * (d / 2) + k / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_pairs_the_halves_and_keeps_norms() {
        let d = 8;
        let f = inv_freqs(d, 10000.0);
        assert_eq!(f[0], 1.0);
        let mut cs = vec![0f32; d];
        angles(3, &f, &mut cs);
        let x: Vec<f32> = (0..2 * d).map(|i| i as f32 * 0.1 - 0.5).collect();
        let mut y = x.clone();
        rotate(&mut y, d, &cs);
        for head in 0..2 {
            let (xh, yh) = (&x[head * d..][..d], &y[head * d..][..d]);
            for i in 0..d / 2 {
                let n0 = xh[i].hypot(xh[i + d / 2]);
                let n1 = yh[i].hypot(yh[i + d / 2]);
                assert!((n0 - n1).abs() < 1e-5);
            }
        }
        // Position 0 is the identity.
        angles(0, &f, &mut cs);
        let mut z = x.clone();
        rotate(&mut z, d, &cs);
        assert_eq!(z, x);
    }

    #[test]
    fn gguf_rows_are_a_permutation_within_heads() {
        let d = 6;
        let mut seen: Vec<usize> = (0..2 * d).map(|r| gguf_row(r, d)).collect();
        assert_eq!(gguf_row(1, d), 3); // 2·0 + 1 → 1·3 + 0
        assert_eq!(gguf_row(d + 2, d), d + 1);
        seen.sort();
        assert_eq!(seen, (0..2 * d).collect::<Vec<_>>());
    }
}
