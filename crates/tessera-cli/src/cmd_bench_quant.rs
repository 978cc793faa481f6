//! `tessera bench quant`: speed of the quantized products on SmolLM2-135M's shapes.
//!
//! For each type, shape and thread count: the mat-vec (decode, n = 1) time per call, GFLOP/s
//! (2·rows·cols per call) and effective GB/s (weight bytes per call), with the weights streamed
//! from memory (enough copies of each matrix are cycled that they cannot stay in cache), and the
//! mat-mat (prefill, n rows) GFLOP/s. Then a whole decode step of the model's matrices (30 layers
//! of q, k, v, o, gate, up, down, and the tied head), every matrix distinct, as an upper bound on
//! decode tokens/s from the products alone. Medians over `--reps` timed batches.

use anyhow::{bail, Result};
use clap::Args;
use std::time::Instant;
use tessera::kernels::quant::{quantize, simd_level, QMatrix, QType, SimdLevel};
use tessera::util::rng::Rng;

#[derive(Args, Debug)]
pub struct BenchQuantArgs {
    /// Weight types (comma-separated GGML names).
    #[arg(long, default_value = "q4_1,q8_0,q4_0,q5_0,q5_1")]
    types: String,
    /// Thread counts to measure (comma-separated; the global --threads is ignored here).
    #[arg(long, default_value = "1,2")]
    thread_counts: String,
    /// Activation rows for the mat-mat measurement (0 = skip).
    #[arg(long, default_value_t = 128)]
    prefill_n: usize,
    /// Timed batches per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Kernel level (avx512-vnni, avx2, scalar; default: the fastest available).
    #[arg(long)]
    level: Option<String>,
    /// Skip the per-shape table (only the whole-model decode step).
    #[arg(long)]
    model_only: bool,
    /// Reuse one copy of each matrix (weights in cache: the kernels' compute speed).
    #[arg(long)]
    hot: bool,
}

/// (name, rows, cols, matrices per decode step) of SmolLM2-135M.
const SHAPES: [(&str, usize, usize, usize); 5] = [
    ("attn_q/o 576x576", 576, 576, 60),
    ("attn_k/v 192x576", 192, 576, 60),
    ("ffn_gate/up 1536x576", 1536, 576, 60),
    ("ffn_down 576x1536", 576, 1536, 30),
    ("output 49152x576", 49152, 576, 1),
];

/// Bytes of weights the cycled copies of one shape must exceed to defeat the caches.
const STREAM_BYTES: usize = 96 << 20;

fn parse_type(s: &str) -> Result<QType> {
    QType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| anyhow::anyhow!("unknown type {s:?}"))
}

/// A random matrix of type `t`: quantized normals where a quantizer exists, else random blocks
/// with sane f16 scales.
fn random_matrix(rng: &mut Rng, t: QType, rows: usize, cols: usize) -> Result<QMatrix> {
    let bytes = match quantize(t, &[0.0; 256][..t.block_elems().max(1)]) {
        Ok(_) => {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.normal() as f32 * 0.05)
                .collect();
            quantize(t, &w)?
        }
        Err(_) => {
            let n = t
                .bytes_for(rows * cols)
                .ok_or_else(|| anyhow::anyhow!("{t}: bad shape"))?;
            let mut b: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            for blk in b.chunks_exact_mut(t.block_bytes()) {
                for &o in t.f16_scale_offsets() {
                    let v = half_bits(rng.uniform_f32() * 0.01);
                    blk[o..o + 2].copy_from_slice(&v);
                }
            }
            b
        }
    };
    // In the layout the model loader gives it (`QMatrix::packed`).
    Ok(QMatrix::new(t, rows, cols, bytes)?.packed())
}

fn half_bits(x: f32) -> [u8; 2] {
    tessera::kernels::quant::formats::f16_bits(x)
}

/// Median seconds per call of `f`, over `reps` batches of calls lasting about 0.1 s each.
fn time_per_call(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let t0 = Instant::now();
    f();
    let one = t0.elapsed().as_secs_f64().max(1e-7);
    let calls = ((0.1 / one) as usize).clamp(1, 100_000);
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

pub fn run(a: BenchQuantArgs) -> Result<()> {
    let types: Vec<QType> = a.types.split(',').map(parse_type).collect::<Result<_>>()?;
    let threads: Vec<usize> = a
        .thread_counts
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()?;
    let level = match &a.level {
        None => SimdLevel::detect(),
        Some(name) => match SimdLevel::ALL.into_iter().find(|l| l.name() == name) {
            Some(l) if l.is_available() => l,
            _ => bail!("kernel level {name:?} is unknown or not available on this CPU"),
        },
    };
    println!("kernels: {} (detected: {})", level.name(), simd_level());
    let mut rng = Rng::new(1);
    for &t in &types {
        for &nt in &threads {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(nt).build()?;
            pool.install(|| bench_type(&a, &mut rng, t, nt, level))?;
        }
    }
    Ok(())
}

fn bench_type(
    a: &BenchQuantArgs,
    rng: &mut Rng,
    t: QType,
    nt: usize,
    level: SimdLevel,
) -> Result<()> {
    let mut model: Vec<(QMatrix, usize)> = Vec::new();
    let mut per_token_bytes = 0usize;
    for &(name, rows, cols, count) in &SHAPES {
        if cols % t.block_elems() != 0 {
            println!("{t:6} {name:22} threads {nt}: n/a ({cols} columns are not whole {t} blocks)");
            continue;
        }
        let m = random_matrix(rng, t, rows, cols)?;
        let bytes = m.bytes().len();
        per_token_bytes += bytes * count;
        if !a.model_only {
            let copies = if a.hot {
                1
            } else {
                STREAM_BYTES.div_ceil(bytes).clamp(1, 64)
            };
            let mats: Vec<QMatrix> = (0..copies).map(|_| m.deep_copy()).collect();
            let x: Vec<f32> = (0..cols).map(|_| rng.normal() as f32).collect();
            let mut out = vec![0f32; rows];
            let mut i = 0;
            let s = time_per_call(a.reps, || {
                mats[i % copies]
                    .matmul_with(level, &x, 1, &mut out)
                    .unwrap();
                i += 1;
            });
            let flops = 2.0 * (rows * cols) as f64;
            let mut line = format!(
                "{t:6} {name:22} threads {nt}: decode {:8.1} us  {:6.1} GFLOP/s  {:6.2} GB/s",
                s * 1e6,
                flops / s / 1e9,
                bytes as f64 / s / 1e9
            );
            if a.prefill_n > 0 && rows <= 1536 {
                let n = a.prefill_n;
                let xs: Vec<f32> = (0..n * cols).map(|_| rng.normal() as f32).collect();
                let mut outs = vec![0f32; n * rows];
                let sp = time_per_call(a.reps, || {
                    m.matmul_with(level, &xs, n, &mut outs).unwrap();
                });
                line += &format!(
                    "  | prefill n={n} {:8.1} us  {:6.1} GFLOP/s",
                    sp * 1e6,
                    flops * n as f64 / sp / 1e9
                );
            }
            println!("{line}");
        }
        model.push((m, count));
    }
    if model.len() == SHAPES.len() {
        // Every matrix of a decode step distinct, as in the model (about 80 MB for Q4_1).
        let mut mats = Vec::new();
        for (m, count) in &model {
            for _ in 0..*count {
                mats.push(m.deep_copy());
            }
        }
        let xs: Vec<Vec<f32>> = mats
            .iter()
            .map(|m| (0..m.cols()).map(|_| rng.normal() as f32).collect())
            .collect();
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows()]).collect();
        let s = time_per_call(a.reps, || {
            for ((m, x), o) in mats.iter().zip(&xs).zip(outs.iter_mut()) {
                m.matmul_with(level, x, 1, o).unwrap();
            }
        });
        println!(
            "{t:6} model decode step     threads {nt}: {:8.2} ms  {:6.1} tokens/s (products only)  {:6.2} GB/s ({:.1} MB)",
            s * 1e3,
            1.0 / s,
            per_token_bytes as f64 / s / 1e9,
            per_token_bytes as f64 / 1e6
        );
    }
    Ok(())
}
