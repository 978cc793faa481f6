//! Quantized formats and kernels: golden dequantization (the `gguf` Python package), every SIMD
//! kernel against the portable one (exactly for the integer part), decode against prefill, and
//! the kernels against an f32 product of the dequantized operands.
//!
//! Tolerances: products are compared relative to Σ|w_i x_i| (the scale of the rounding error of
//! any summation order): 1e-5 between kernel levels (same integers, different f32 summation
//! order), 1e-4 between the integer kernel and the f32 product of the dequantized operands (the
//! same products, but Q4_1/Q5_1 use the f16-rounded block sum `s` as GGML does).

use tessera::kernels::quant::formats::f16_bits;
use tessera::kernels::quant::{quantize, Acts, QMatrix, QType, SimdLevel};
use tessera::util::rng::Rng;

const BLOCK32: [QType; 5] = [
    QType::Q4_0,
    QType::Q4_1,
    QType::Q5_0,
    QType::Q5_1,
    QType::Q8_0,
];
const KQUANTS: [QType; 5] = [QType::Q2K, QType::Q3K, QType::Q4K, QType::Q5K, QType::Q6K];

fn levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_available())
        .collect()
}

/// Integer activations in -127..=127 with a 127 in every 32-block: each block's scale is exactly
/// 1, so every kernel's partial sums are exact integers.
fn integer_acts(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            if i % 32 == 5 {
                127.0
            } else {
                rng.below(255) as f32 - 127.0
            }
        })
        .collect()
}

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Random blocks of type `t` with every f16 scale set to `scale(rng)`.
fn random_blocks(
    rng: &mut Rng,
    t: QType,
    elems: usize,
    scale: impl Fn(&mut Rng) -> f32,
) -> Vec<u8> {
    let bb = t.block_bytes();
    let mut b: Vec<u8> = (0..t.bytes_for(elems).unwrap())
        .map(|_| rng.below(256) as u8)
        .collect();
    for blk in b.chunks_exact_mut(bb) {
        for &o in t.f16_scale_offsets() {
            let v = f16_bits(scale(rng));
            blk[o..o + 2].copy_from_slice(&v);
        }
    }
    b
}

/// The f16 at byte `o` of `b`.
fn half_at(b: &[u8], o: usize) -> f32 {
    tessera::kernels::quant::formats::f16_at(b, o)
}

/// Σ|a_i b_i| over rows: the error scale of a dot product.
fn abs_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum()
}

/// The f32 product (n, rows) of x (n, cols) and the dequantized weights, and the error scales.
fn reference(w: &[f32], x: &[f32], n: usize, rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0f32; n * rows];
    let mut scale = vec![0f32; n * rows];
    for j in 0..n {
        for r in 0..rows {
            let (wr, xj) = (&w[r * cols..(r + 1) * cols], &x[j * cols..(j + 1) * cols]);
            out[j * rows + r] = wr.iter().zip(xj).map(|(a, b)| a * b).sum();
            scale[j * rows + r] = abs_dot(wr, xj);
        }
    }
    (out, scale)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g - w).abs() <= rel * s + 1e-6,
            "{what}: [{i}] {g} vs {w} (scale {s})"
        );
    }
}

/// The activations dequantized exactly as the kernels see them (32- or 256-blocks).
fn dequantized_acts(x: &[f32], n: usize, cols: usize, block: usize) -> Vec<f32> {
    let mut a = Acts::default();
    a.quantize(x, n, cols, block);
    (0..n * cols)
        .map(|i| a.qs[i] as f32 * a.d[i / block])
        .collect()
}

#[test]
fn golden_dequantization_matches_gguf_python() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/quant/golden.json"
    ))
    .unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in cases.as_array().unwrap() {
        let t = QType::from_ggml(case["type"].as_u64().unwrap() as u32).unwrap();
        let bytes: Vec<u8> = case["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let want: Vec<f32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let m = QMatrix::new(t, 1, want.len(), bytes).unwrap();
        let got = m.dequantize();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{t} [{i}]: {g} vs {w}"
            );
        }
    }
}

#[test]
fn simd_kernels_equal_scalar_exactly_on_integer_data() {
    // Unit scales, zero minimums and integer activations with a 127 in every block: the
    // activation scale is exactly 1 and every partial sum is an integer below 2^24, so each
    // kernel level must give exactly the same numbers.
    let mut rng = Rng::new(1);
    let (rows, cols, n) = (37, 576, 6);
    let x = integer_acts(&mut rng, n * cols);
    for t in BLOCK32 {
        let mut w = random_blocks(&mut rng, t, rows * cols, |_| 1.0);
        if matches!(t, QType::Q4_1 | QType::Q5_1) {
            for blk in w.chunks_exact_mut(t.block_bytes()) {
                blk[2..4].copy_from_slice(&f16_bits(0.0));
            }
        }
        let m = QMatrix::new(t, rows, cols, w).unwrap();
        let mut want = vec![0f32; n * rows];
        m.matmul_with(SimdLevel::Scalar, &x, n, &mut want).unwrap();
        let (r, _) = reference(&m.dequantize(), &x, n, rows, cols);
        assert_eq!(want, r, "{t}: scalar kernel vs exact integer product");
        for level in levels() {
            for nn in [1, n] {
                let mut got = vec![0f32; nn * rows];
                m.matmul_with(level, &x[..nn * cols], nn, &mut got).unwrap();
                assert_eq!(got, want[..nn * rows], "{t} {level:?} n={nn}");
            }
        }
    }
}

/// `m` times `x` (n rows; activations in blocks of `block`) with the scalar kernel equals the f32
/// product of the dequantized weights and activations (1e-4 of the error scale), and every SIMD
/// level equals the scalar kernel (1e-5).
fn check_against_dequantized(m: &QMatrix, x: &[f32], n: usize, block: usize) {
    let (t, rows, cols) = (m.qtype(), m.rows(), m.cols());
    let xq = dequantized_acts(x, n, cols, block);
    let (mut want, scale) = reference(&m.dequantize(), &xq, n, rows, cols);
    if matches!(t, QType::Q4_1 | QType::Q5_1) {
        // GGML's Q4_1/Q5_1 products use s = f16(d Σq) for Σx; model that rounding.
        let mut a = Acts::default();
        a.quantize(x, n, cols, 32);
        let nb = cols / 32;
        for j in 0..n {
            for r in 0..rows {
                let row = &m.bytes()[r * nb * t.block_bytes()..];
                for b in 0..nb {
                    let blk = &row[b * t.block_bytes()..];
                    let mw = half_at(blk, 2);
                    let i = j * nb + b;
                    want[j * rows + r] += mw * (a.s[i] - a.d[i] * a.sum[i] as f32);
                }
            }
        }
    }
    let mut scalar = vec![0f32; n * rows];
    m.matmul_with(SimdLevel::Scalar, x, n, &mut scalar).unwrap();
    assert_close(&format!("{t} scalar"), &scalar, &want, &scale, 1e-4);
    for level in levels() {
        let mut got = vec![0f32; n * rows];
        m.matmul_with(level, x, n, &mut got).unwrap();
        assert_close(&format!("{t} {level:?}"), &got, &scalar, &scale, 1e-5);
    }
}

#[test]
fn kernels_match_the_dequantized_product() {
    let mut rng = Rng::new(2);
    // 192 x 576 (GQA k/v: 4-block steps and a pair), 17 blocks (an odd tail), 7 blocks (4 + 2 + 1).
    for (rows, cols, n) in [(192, 576, 1), (192, 576, 7), (33, 544, 5), (9, 224, 6)] {
        let x = randn(&mut rng, n * cols);
        for t in BLOCK32 {
            let w = quantize(t, &randn(&mut rng, rows * cols)).unwrap();
            check_against_dequantized(&QMatrix::new(t, rows, cols, w).unwrap(), &x, n, 32);
        }
    }
}

#[test]
fn k_quant_kernels_match_the_dequantized_product() {
    let mut rng = Rng::new(3);
    let (rows, cols) = (24, 512);
    for n in [1, 6] {
        let x = randn(&mut rng, n * cols);
        for t in KQUANTS {
            let w = random_blocks(&mut rng, t, rows * cols, |r| (r.uniform_f32() - 0.5) * 0.1);
            check_against_dequantized(&QMatrix::new(t, rows, cols, w).unwrap(), &x, n, 256);
        }
    }
}

#[test]
fn float_weights_match_f32_product() {
    let mut rng = Rng::new(4);
    // 3 rows: one dot product per output; GEMM_MIN + 5 rows: the tiled f32 GEMM (dense
    // checkpoints' prefill).
    let big = tessera::kernels::quant::matmul::F32_GEMM_MIN_ROWS + 5;
    for (rows, cols, n) in [(19, 100, 3), (130, 96, big)] {
        let x = randn(&mut rng, n * cols);
        for t in [QType::F32, QType::F16, QType::BF16] {
            let w = quantize(t, &randn(&mut rng, rows * cols)).unwrap();
            let m = QMatrix::new(t, rows, cols, w).unwrap();
            let (want, scale) = reference(&m.dequantize(), &x, n, rows, cols);
            for level in levels() {
                let mut got = vec![0f32; n * rows];
                m.matmul_with(level, &x, n, &mut got).unwrap();
                assert_close(&format!("{t} n={n} {level:?}"), &got, &want, &scale, 1e-5);
            }
        }
    }
}

#[test]
fn prefill_rows_equal_decode_rows() {
    // Each activation row of a batched product must equal that row multiplied alone, bit for bit
    // (the batched kernel shares the weight unpack, not the arithmetic).
    let mut rng = Rng::new(5);
    let (rows, cols, n) = (200, 512, 11);
    let x = randn(&mut rng, n * cols);
    for t in BLOCK32.into_iter().chain(KQUANTS) {
        let w = random_blocks(&mut rng, t, rows * cols, |r| (r.uniform_f32() - 0.5) * 0.1);
        let m = QMatrix::new(t, rows, cols, w).unwrap();
        for level in levels() {
            let mut all = vec![0f32; n * rows];
            m.matmul_with(level, &x, n, &mut all).unwrap();
            for j in 0..n {
                let mut one = vec![0f32; rows];
                m.matmul_with(level, &x[j * cols..(j + 1) * cols], 1, &mut one)
                    .unwrap();
                assert_eq!(one, all[j * rows..(j + 1) * rows], "{t} {level:?} row {j}");
            }
        }
    }
}

#[test]
fn dequantize_row_equals_rows_of_dequantize() {
    let mut rng = Rng::new(6);
    let (rows, cols) = (5, 512);
    for t in BLOCK32.into_iter().chain(KQUANTS) {
        let w = random_blocks(&mut rng, t, rows * cols, |r| r.uniform_f32() * 0.1);
        let m = QMatrix::new(t, rows, cols, w).unwrap();
        let all = m.dequantize();
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut row);
            assert_eq!(row, all[r * cols..(r + 1) * cols], "{t} row {r}");
        }
        assert!(m.try_dequantize_row(rows, &mut row).is_err());
        assert!(m.try_dequantize_row(0, &mut row[..3]).is_err());
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ok = vec![0u8; 2 * 20];
    assert!(QMatrix::new(QType::Q4_1, 2, 32, ok.clone()).is_ok());
    // Wrong byte count, columns not a whole number of blocks, activation-only type.
    assert!(QMatrix::new(QType::Q4_1, 3, 32, ok.clone()).is_err());
    assert!(QMatrix::new(QType::Q4_1, 2, 33, ok.clone()).is_err());
    assert!(QMatrix::new(QType::Q8K, 1, 256, vec![0u8; 292]).is_err());
    // Sizes that overflow.
    assert!(QMatrix::new(QType::Q4_1, usize::MAX / 8, 64, ok.clone()).is_err());
    let m = QMatrix::new(QType::Q4_1, 2, 32, ok).unwrap();
    let mut out = vec![0f32; 2];
    assert!(m.matmul(&[0.0; 31], 1, &mut out).is_err());
    assert!(m.matmul(&[0.0; 32], 1, &mut out[..1]).is_err());
    assert!(m.matmul(&[0.0; 32], 1, &mut out).is_ok());
    let mut empty: [f32; 0] = [];
    assert!(m.matmul(&[], 0, &mut empty).is_ok());
}

#[test]
fn ggml_ids_and_sizes() {
    assert_eq!(QType::from_ggml(3), Some(QType::Q4_1));
    assert_eq!(QType::Q8_0.ggml_id(), 8);
    assert_eq!(QType::BF16.ggml_id(), 30);
    assert_eq!(QType::Q6K.block_bytes(), 210);
    assert_eq!(QType::Q4K.block_elems(), 256);
    assert_eq!(QType::Q4_1.name(), "q4_1");
    assert_eq!(QType::from_ggml(99), None);
    let level = tessera::kernels::quant::simd_level();
    assert!(["avx512-vnni", "avx2", "neon-dotprod", "neon", "scalar"].contains(&level));
}

#[test]
fn detection_picks_the_architecture_s_level() {
    let on_x86 = cfg!(target_arch = "x86_64");
    let on_arm = cfg!(target_arch = "aarch64");
    assert!(SimdLevel::Scalar.is_available());
    assert_eq!(
        SimdLevel::Neon.is_available(),
        on_arm,
        "NEON is baseline on aarch64"
    );
    if !on_arm {
        assert!(!SimdLevel::NeonDot.is_available());
    }
    if !on_x86 {
        assert!(!SimdLevel::Avx2.is_available() && !SimdLevel::Avx512Vnni.is_available());
    }
    // Without a cap, the fastest available level (the first of `ALL` that is available).
    if std::env::var_os("TESSERA_SIMD").is_none() {
        let first = SimdLevel::ALL.into_iter().find(|l| l.is_available());
        assert_eq!(Some(SimdLevel::detect()), first);
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(
        SimdLevel::NeonDot.is_available(),
        std::arch::is_aarch64_feature_detected!("dotprod")
    );
}

#[test]
fn wide_products_use_f32_gemm_on_dequantized_tiles() {
    // From F32_GEMM_MIN_ROWS activation rows on, the weights are dequantized in tiles and
    // multiplied in f32 (no 8-bit activations): the result is the f32 product up to sum order.
    let mut rng = Rng::new(7);
    let (rows, cols) = (130, 256);
    let n = tessera::kernels::quant::matmul::F32_GEMM_MIN_ROWS + 3;
    let x = randn(&mut rng, n * cols);
    for t in [QType::Q4_1, QType::Q8_0, QType::Q4K, QType::Q6K] {
        let w = random_blocks(&mut rng, t, rows * cols, |r| (r.uniform_f32() - 0.5) * 0.1);
        let m = QMatrix::new(t, rows, cols, w).unwrap();
        let (want, scale) = reference(&m.dequantize(), &x, n, rows, cols);
        let mut got = vec![0f32; n * rows];
        m.matmul(&x, n, &mut got).unwrap();
        assert_close(&format!("{t} gemm"), &got, &want, &scale, 1e-5);
    }
}

#[test]
fn hot_pool_and_batched_matvecs_equal_single_products() {
    use tessera::kernels::quant::{matvec_many, Rayon};
    use tessera::util::pool::HotPool;
    let mut rng = Rng::new(8);
    let cols = 512;
    let x = randn(&mut rng, 11 * cols);
    let mats: Vec<QMatrix> = [(QType::Q4_1, 300), (QType::Q8_0, 64), (QType::Q4K, 129)]
        .into_iter()
        .map(|(t, rows)| {
            let w = random_blocks(&mut rng, t, rows * cols, |r| (r.uniform_f32() - 0.5) * 0.1);
            QMatrix::new(t, rows, cols, w).unwrap()
        })
        .collect();
    for threads in [1, 2, 3] {
        let pool = HotPool::new(threads);
        for m in &mats {
            for n in [1, 11] {
                let (mut a, mut b) = (vec![0f32; n * m.rows()], vec![0f32; n * m.rows()]);
                m.matmul_on(&Rayon, &x[..n * cols], n, &mut a).unwrap();
                m.matmul_on(&pool, &x[..n * cols], n, &mut b).unwrap();
                assert_eq!(a, b, "{:?} n={n} threads={threads}", m.qtype());
            }
        }
        // One batched job equals three products.
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows()]).collect();
        {
            let mut prods: Vec<(&QMatrix, &mut [f32])> = mats
                .iter()
                .zip(outs.iter_mut())
                .map(|(m, o)| (m, &mut o[..]))
                .collect();
            matvec_many(&pool, &x[..cols], &mut prods).unwrap();
        }
        for (m, o) in mats.iter().zip(&outs) {
            let mut one = vec![0f32; m.rows()];
            m.matmul(&x[..cols], 1, &mut one).unwrap();
            assert_eq!(&one, o, "{:?} batched", m.qtype());
        }
        // Size errors name the problem.
        let mut short = [0f32; 3];
        let mut prods: Vec<(&QMatrix, &mut [f32])> = vec![(&mats[0], &mut short[..])];
        assert!(matvec_many(&pool, &x[..cols], &mut prods).is_err());
    }
}

#[test]
fn interleaved_layout_equals_row_layout() {
    use tessera::kernels::quant::matvec_many;
    use tessera::util::pool::HotPool;
    const X16: [QType; 3] = [QType::Q4_0, QType::Q4_1, QType::Q8_0];
    let mut rng = Rng::new(9);
    // Integer data (as in `simd_kernels_equal_scalar_exactly_on_integer_data`): every level on
    // the interleaved copy equals the scalar kernel on the rows exactly, for every count of
    // activation rows the kernel groups differently (8, 4, 2, 1 at a time).
    let (rows, cols) = (48, 576);
    let nmax = 19;
    let x = integer_acts(&mut rng, nmax * cols);
    for t in X16 {
        let mut w = random_blocks(&mut rng, t, rows * cols, |_| 1.0);
        if t == QType::Q4_1 {
            for blk in w.chunks_exact_mut(t.block_bytes()) {
                blk[2..4].copy_from_slice(&f16_bits(0.0));
            }
        }
        let m = QMatrix::new(t, rows, cols, w).unwrap();
        let p = m.interleaved().unwrap();
        assert!(p.is_packed() && !m.is_packed());
        assert_eq!(p.bytes().len(), m.bytes().len());
        assert_eq!(p.dequantize(), m.dequantize(), "{t}");
        for n in [1, 2, 3, 4, 5, 8, 9, 13, nmax] {
            let mut want = vec![0f32; n * rows];
            m.matmul_with(SimdLevel::Scalar, &x[..n * cols], n, &mut want)
                .unwrap();
            for level in levels() {
                let mut got = vec![0f32; n * rows];
                p.matmul_with(level, &x[..n * cols], n, &mut got).unwrap();
                assert_eq!(got, want, "{t} {level:?} n={n}");
            }
        }
    }
    // Real-valued data: within the kernels' tolerance, the f32 GEMM path included; each row of
    // a batched product equals that row alone bit for bit; rows and errors as for the rows.
    let (rows, cols) = (208, 512);
    let big = tessera::kernels::quant::matmul::F32_GEMM_MIN_ROWS + 3;
    let x = randn(&mut rng, big * cols);
    for t in X16 {
        let w = random_blocks(&mut rng, t, rows * cols, |r| (r.uniform_f32() - 0.5) * 0.1);
        let m = QMatrix::new(t, rows, cols, w).unwrap();
        let p = m.interleaved().unwrap();
        for n in [1, 7, 11, big] {
            let (want, scale) = reference(&m.dequantize(), &x[..n * cols], n, rows, cols);
            let mut rowwise = vec![0f32; n * rows];
            m.matmul(&x[..n * cols], n, &mut rowwise).unwrap();
            for level in levels() {
                let mut got = vec![0f32; n * rows];
                p.matmul_with(level, &x[..n * cols], n, &mut got).unwrap();
                assert_close(
                    &format!("{t} {level:?} n={n}"),
                    &got,
                    &rowwise,
                    &scale,
                    1e-5,
                );
                if n == big {
                    assert_close(&format!("{t} gemm"), &got, &want, &scale, 1e-5);
                }
                if n == 11 {
                    for j in 0..n {
                        let mut one = vec![0f32; rows];
                        p.matmul_with(level, &x[j * cols..(j + 1) * cols], 1, &mut one)
                            .unwrap();
                        assert_eq!(one, got[j * rows..(j + 1) * rows], "{t} {level:?} row {j}");
                    }
                }
            }
        }
        let mut row = vec![0f32; cols];
        let all = m.dequantize();
        for r in [0, 15, 16, 17, rows - 1] {
            p.dequantize_row(r, &mut row);
            assert_eq!(row, all[r * cols..(r + 1) * cols], "{t} row {r}");
        }
        assert!(p.try_dequantize_row(rows, &mut row).is_err());
        let e = p.permute_rows(|r| r).unwrap_err().to_string();
        assert!(e.contains("interleaved"), "{e}");
        // Several products of the same rows as one job (all interleaved), or one each (mixed
        // with a row-layout matrix): every output equals its product alone.
        {
            use tessera::kernels::quant::matmul_many;
            let p2 = m.interleaved().unwrap();
            let k4 = QMatrix::new(
                QType::Q4K,
                32,
                cols,
                random_blocks(&mut rng, QType::Q4K, 32 * cols, |r| r.uniform_f32() * 0.1),
            )
            .unwrap();
            for threads in [1, 3] {
                let pool = HotPool::new(threads);
                for n in [2, 7, 11] {
                    let xs = &x[..n * cols];
                    let (mut a, mut b, mut c) = (
                        vec![0f32; n * rows],
                        vec![0f32; n * rows],
                        vec![0f32; n * 32],
                    );
                    matmul_many(&pool, xs, n, &mut [(&p, &mut a[..]), (&p2, &mut b[..])]).unwrap();
                    let mut one = vec![0f32; n * rows];
                    p.matmul_on(&pool, xs, n, &mut one).unwrap();
                    assert_eq!(a, one, "{t} n={n} threads={threads}");
                    assert_eq!(b, one, "{t} n={n} threads={threads}");
                    matmul_many(&pool, xs, n, &mut [(&p, &mut a[..]), (&k4, &mut c[..])]).unwrap();
                    let mut kone = vec![0f32; n * 32];
                    k4.matmul_on(&pool, xs, n, &mut kone).unwrap();
                    assert_eq!((a.clone(), c.clone()), (one, kone), "{t} mixed n={n}");
                }
                let mut short = [0f32; 3];
                assert!(
                    matmul_many(&pool, &x[..2 * cols], 2, &mut [(&p, &mut short[..])]).is_err()
                );
            }
        }
        // Hot pool, several threads, batched with a row-layout matrix: equal to single products.
        let other = QMatrix::new(
            QType::Q4K,
            32,
            cols,
            random_blocks(&mut rng, QType::Q4K, 32 * cols, |r| r.uniform_f32() * 0.1),
        )
        .unwrap();
        for threads in [1, 2, 3] {
            let pool = HotPool::new(threads);
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; 32]);
            matvec_many(
                &pool,
                &x[..cols],
                &mut [(&p, &mut a[..]), (&other, &mut b[..])],
            )
            .unwrap();
            let mut one = vec![0f32; rows];
            p.matmul(&x[..cols], 1, &mut one).unwrap();
            assert_eq!(a, one, "{t} threads={threads}");
        }
    }
    // What has no interleaved layout says so.
    let odd = QMatrix::new(QType::Q4_1, 37, 64, vec![0u8; 37 * 2 * 20]).unwrap();
    assert!(odd
        .interleaved()
        .unwrap_err()
        .to_string()
        .contains("multiple of 16"));
    let k = QMatrix::new(QType::Q4K, 16, 256, vec![0u8; 16 * 144]).unwrap();
    assert!(k.interleaved().is_err());
    assert!(!k.packed().is_packed() && !odd.packed().is_packed());
}
