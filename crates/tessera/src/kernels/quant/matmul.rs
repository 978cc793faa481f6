//! `x W^T` with W quantized: activation quantization into reusable scratch, the choice of SIMD
//! kernel, and the split over rayon threads.
//!
//! Decode (n = 1): the weight rows are split into a few chunks per thread; each row is one call of
//! the row kernel, writing straight into `out`. Prefill (n > 1): each chunk of 16 weight rows is
//! multiplied with groups of 4 activation rows (the weights unpacked once per group), into a
//! (rows, n) tile that is transposed into `out` at the end. Nothing is allocated per call once
//! the thread's scratch has grown to the largest shape seen.

use std::cell::RefCell;

use rayon::prelude::*;

use super::formats::{QType, QK, QK_K};
use super::quantize::Acts;
use super::{dot_scalar, SimdLevel};

/// Reusable per-thread buffers of the products.
#[derive(Default)]
struct Scratch {
    acts: Acts,
    tile: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Weight rows per work item in prefill.
const PREFILL_ROWS: usize = 16;
/// Activation rows sharing one weight unpack.
const ACT_GROUP: usize = 4;
/// Below this many weights a product runs on the calling thread only.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 15;

/// The kernel of one weight row against activation rows `j0..j0 + out.len()`.
type RowFn = fn(QType, &[u8], &Acts, usize, &mut [f32]);

/// The kernel of `nrows` weight rows against `g` activation rows from `j0`, writing
/// `out[i * ldo + k]`.
type RowsFn = fn(QType, &[u8], usize, &Acts, usize, usize, &mut [f32], usize);

/// A [`RowsFn`] from a [`RowFn`], one weight row at a time.
#[allow(clippy::too_many_arguments)]
#[inline]
fn each_row(
    f: RowFn,
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let rb = w.len() / nrows.max(1);
    for i in 0..nrows {
        f(
            t,
            &w[i * rb..(i + 1) * rb],
            acts,
            j0,
            &mut out[i * ldo..i * ldo + g],
        );
    }
}

macro_rules! rows_via {
    ($name:ident, $row:path) => {
        #[allow(clippy::too_many_arguments)]
        fn $name(
            t: QType,
            w: &[u8],
            nrows: usize,
            acts: &Acts,
            j0: usize,
            g: usize,
            out: &mut [f32],
            ldo: usize,
        ) {
            each_row($row, t, w, nrows, acts, j0, g, out, ldo)
        }
    };
}

rows_via!(scalar_rows32, dot_scalar::row32);
rows_via!(scalar_rows_k, dot_scalar::row_k);
#[cfg(target_arch = "x86_64")]
rows_via!(avx2_rows32, super::dot_avx2::row32);
#[cfg(target_arch = "x86_64")]
rows_via!(avx2_rows_k, super::dot_avx2::row_k);
#[cfg(target_arch = "x86_64")]
rows_via!(avx512_rows_k, super::dot_avx512::row_k);

fn rows_fn(level: SimdLevel, t: QType) -> RowsFn {
    let k = t.is_k_quant();
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni if k => avx512_rows_k,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => super::dot_avx512::rows32,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 if k => avx2_rows_k,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => avx2_rows32,
        _ if k => scalar_rows_k,
        _ => scalar_rows32,
    }
}

fn float_fn(level: SimdLevel) -> fn(QType, &[u8], &[f32]) -> f32 {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => super::dot_avx512::row_float,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => super::dot_avx2::row_float,
        _ => dot_scalar::row_float,
    }
}

/// Rows per parallel work item for `rows` rows of `cols` weights.
fn chunk_rows(rows: usize, cols: usize) -> usize {
    if rows * cols < PARALLEL_MIN_WEIGHTS {
        return rows.max(1);
    }
    // A few items per thread, so a thread slowed by a neighbour does not hold the others.
    let items = rayon::current_num_threads() * 4;
    rows.div_ceil(items).max(4)
}

/// `out (n, rows) = x (n, cols) W^T` for W = `w` (rows of `row_bytes` bytes of type `t`).
/// Sizes are checked by the caller (`QMatrix::matmul_with`); `level` must be available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    level: SimdLevel,
    t: QType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let rb = t.bytes_for(cols).unwrap_or(0);
    let chunk = chunk_rows(rows, cols);
    if t.is_float() {
        let f = float_fn(level);
        if n == 1 {
            par_or_seq(out, chunk, rows * cols, |r0, o| {
                for (i, v) in o.iter_mut().enumerate() {
                    let r = r0 + i;
                    *v = f(t, &w[r * rb..(r + 1) * rb], x);
                }
            });
        } else {
            with_scratch(|s| {
                prefill(&mut s.tile, rows, n, chunk, out, |r0, nr, j0, g, o| {
                    for i in 0..nr {
                        let wr = &w[(r0 + i) * rb..(r0 + i + 1) * rb];
                        for k in 0..g {
                            let xj = &x[(j0 + k) * cols..(j0 + k + 1) * cols];
                            o[i * n + k] = f(t, wr, xj);
                        }
                    }
                })
            });
        }
        return;
    }
    let f = rows_fn(level, t);
    let block = if t.is_k_quant() { QK_K } else { QK };
    with_scratch(|s| {
        s.acts.quantize(x, n, cols, block);
        let acts = &s.acts;
        if n == 1 {
            par_or_seq(out, chunk, rows * cols, |r0, o| {
                let nr = o.len();
                f(t, &w[r0 * rb..(r0 + nr) * rb], nr, acts, 0, 1, o, 1);
            });
        } else {
            prefill(&mut s.tile, rows, n, chunk, out, |r0, nr, j0, g, o| {
                f(t, &w[r0 * rb..(r0 + nr) * rb], nr, acts, j0, g, o, n)
            });
        }
    });
}

/// Run `f` with this thread's scratch (or a fresh one if it is already in use, e.g. when a rayon
/// worker re-enters a product while another is in flight on the same thread).
fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Apply `f(first_row, out_chunk)` over chunks of `out`, in parallel when the work is large.
fn par_or_seq(out: &mut [f32], chunk: usize, work: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if work < PARALLEL_MIN_WEIGHTS || chunk >= out.len() {
        f(0, out);
    } else {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, o)| f(i * chunk, o));
    }
}

/// The prefill schedule: `f(r0, nr, j0, g, o)` computes weight rows `r0..r0 + nr` against
/// activation rows `j0..j0 + g`, writing `o[i * n + k]` (`o` starts at row `r0`, column `j0` of
/// the (rows, n) tile); the tile is then transposed into `out` (n, rows).
fn prefill(
    tile: &mut Vec<f32>,
    rows: usize,
    n: usize,
    chunk: usize,
    out: &mut [f32],
    f: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
) {
    if tile.len() < rows * n {
        tile.resize(rows * n, 0.0);
    }
    let tile = &mut tile[..rows * n];
    let chunk = chunk.clamp(1, PREFILL_ROWS);
    let work = |ci: usize, t: &mut [f32]| {
        let nr = t.len() / n;
        for j0 in (0..n).step_by(ACT_GROUP) {
            let g = ACT_GROUP.min(n - j0);
            f(ci * chunk, nr, j0, g, &mut t[j0..]);
        }
    };
    if rows * n < 64 {
        tile.chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(i, t)| work(i, t));
    } else {
        tile.par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(i, t)| work(i, t));
    }
    let tile = &*tile;
    out.par_chunks_mut(rows).enumerate().for_each(|(j, o)| {
        for (r, v) in o.iter_mut().enumerate() {
            *v = tile[r * n + j];
        }
    });
}
