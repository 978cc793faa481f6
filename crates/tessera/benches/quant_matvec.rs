//! Quantized mat-vec speed on SmolLM2-135M's shapes, without the CLI:
//! `cargo bench -p tessera --bench quant_matvec` (env `TYPES=q4_1,q8_0`, `THREADS=1,2`, `HOT=1`).
//!
//! Prints per shape: µs per call, GFLOP/s (2·rows·cols) and effective GB/s (weight bytes), with
//! the weights streamed from memory (copies cycled) unless `HOT=1`, and a whole decode step of the
//! model's 211 matrices (each distinct). Medians of 5 timed batches. `tessera bench quant` prints
//! the same table.

use std::time::Instant;
use tessera::kernels::quant::formats::f16_bits;
use tessera::kernels::quant::{quantize, simd_level, QMatrix, QType};
use tessera::util::rng::Rng;

const SHAPES: [(&str, usize, usize, usize); 5] = [
    ("attn_q/o 576x576", 576, 576, 60),
    ("attn_k/v 192x576", 192, 576, 60),
    ("ffn_gate/up 1536x576", 1536, 576, 60),
    ("ffn_down 576x1536", 576, 1536, 30),
    ("output 49152x576", 49152, 576, 1),
];

fn matrix(rng: &mut Rng, t: QType, rows: usize, cols: usize) -> QMatrix {
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform_f32() - 0.5).collect();
    let bytes = quantize(t, &w).unwrap_or_else(|_| {
        let mut b: Vec<u8> = (0..t.bytes_for(rows * cols).unwrap())
            .map(|_| rng.below(256) as u8)
            .collect();
        for blk in b.chunks_exact_mut(t.block_bytes()) {
            for &o in t.f16_scale_offsets() {
                blk[o..o + 2].copy_from_slice(&f16_bits(0.01));
            }
        }
        b
    });
    QMatrix::new(t, rows, cols, bytes).unwrap()
}

fn median_secs(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let t0 = Instant::now();
    f();
    let calls = ((0.1 / t0.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(1, 100_000);
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            (0..calls).for_each(|_| f());
            t.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[2]
}

fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let hot = env("HOT", "0") == "1";
    let types: Vec<QType> = env("TYPES", "q4_1,q8_0")
        .split(',')
        .filter_map(|s| QType::ALL.into_iter().find(|t| t.name() == s))
        .collect();
    println!("kernels: {}", simd_level());
    let mut rng = Rng::new(1);
    if let Ok(calls) = env("CALLS", "").parse::<usize>() {
        // A fixed number of hot calls on one shape, for `perf stat` (cycles per call).
        let (_, rows, cols, _) = SHAPES[env("SHAPE", "0").parse::<usize>().unwrap_or(0) % 5];
        let m = matrix(&mut rng, types[0], rows, cols);
        let x = vec![0.1f32; cols];
        let mut out = vec![0f32; rows];
        let mut run = || (0..calls).for_each(|_| m.matmul(&x, 1, &mut out).unwrap());
        if env("INSTALL", "0") == "1" {
            rayon::ThreadPoolBuilder::new()
                .build()
                .unwrap()
                .install(run);
        } else {
            run();
        }
        return;
    }
    for t in types {
        if 576 % t.block_elems() != 0 {
            println!("{t}: n/a (the model's 576 columns are not whole {t} blocks)");
            continue;
        }
        for nt in env("THREADS", "1,2")
            .split(',')
            .filter_map(|s| s.parse().ok())
        {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(nt)
                .build()
                .unwrap();
            pool.install(|| {
                let mut all = Vec::new();
                for &(name, rows, cols, count) in &SHAPES {
                    let m = matrix(&mut rng, t, rows, cols);
                    let bytes = m.bytes().len();
                    let copies = if hot { 1 } else { (96 << 20) / bytes + 1 };
                    let mats: Vec<QMatrix> = (0..copies.min(64)).map(|_| m.clone()).collect();
                    let mats: Vec<QMatrix> = mats
                        .iter()
                        .map(|m| QMatrix::new(t, rows, cols, m.bytes().to_vec()).unwrap())
                        .collect();
                    let x: Vec<f32> = (0..cols).map(|_| rng.uniform_f32() - 0.5).collect();
                    let mut out = vec![0f32; rows];
                    let mut i = 0;
                    let s = median_secs(|| {
                        mats[i % mats.len()].matmul(&x, 1, &mut out).unwrap();
                        i += 1;
                    });
                    println!(
                        "{t:5} {name:21} threads {nt}: {:8.1} us {:6.1} GFLOP/s {:6.2} GB/s",
                        s * 1e6,
                        2.0 * (rows * cols) as f64 / s / 1e9,
                        bytes as f64 / s / 1e9
                    );
                    for _ in 0..count {
                        all.push(QMatrix::new(t, rows, cols, m.bytes().to_vec()).unwrap());
                    }
                }
                let xs: Vec<Vec<f32>> = all.iter().map(|m| vec![0.1; m.cols()]).collect();
                let mut outs: Vec<Vec<f32>> = all.iter().map(|m| vec![0.0; m.rows()]).collect();
                let total: usize = all.iter().map(|m| m.bytes().len()).sum();
                let s = median_secs(|| {
                    for ((m, x), o) in all.iter().zip(&xs).zip(outs.iter_mut()) {
                        m.matmul(x, 1, o).unwrap();
                    }
                });
                println!(
                    "{t:5} model decode step     threads {nt}: {:6.2} ms {:6.1} tokens/s (products only) {:6.2} GB/s",
                    s * 1e3,
                    1.0 / s,
                    total as f64 / s / 1e9
                );
            });
        }
    }
}
