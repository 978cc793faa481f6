//! `x W^T` with W quantized: activation quantization into reusable scratch, the choice of SIMD
//! kernel, and the split over rayon threads.
//!
//! Decode (n = 1): the weight rows are split into a few chunks per thread; each row is one call of
//! the row kernel, writing straight into `out`. Prefill (n > 1): each chunk of 16 weight rows is
//! multiplied with groups of 8 activation rows (the weights unpacked once per group), into a
//! (rows, n) tile that is transposed into `out` at the end; interleaved weights on AVX-512 write
//! straight into `out` instead (16 outputs of an activation row per store, no transpose pass).
//! Nothing is allocated per call once the thread's scratch has grown to the largest shape seen.

use std::cell::RefCell;

use rayon::prelude::*;

use super::formats::{QType, QK, QK_K};
use super::quantize::Acts;
use super::{dot_scalar, SimdLevel};
use crate::util::pool::{HotPool, SharedMut};

/// Reusable per-thread buffers of the products.
#[derive(Default)]
struct Scratch {
    acts: Acts,
    /// 256-blocks of the same activations, when a batch mixes block sizes.
    acts_k: Acts,
    tile: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Weight rows per work item in prefill.
const PREFILL_ROWS: usize = 16;
/// Activation rows sharing one weight unpack.
const ACT_GROUP: usize = 8;
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
#[cfg(target_arch = "aarch64")]
rows_via!(neon_dot_rows_k, super::dot_neon::row_k::<true>);
#[cfg(target_arch = "aarch64")]
rows_via!(neon_rows_k, super::dot_neon::row_k::<false>);

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
        #[cfg(target_arch = "aarch64")]
        SimdLevel::NeonDot if k => neon_dot_rows_k,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::NeonDot => super::dot_neon::rows32::<true>,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon if k => neon_rows_k,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => super::dot_neon::rows32::<false>,
        _ if k => scalar_rows_k,
        _ => scalar_rows32,
    }
}

/// The kernel of weight rows in the 16-row interleaved layout (`interleave`).
fn x16_fn(level: SimdLevel) -> RowsFn {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => super::dot_avx512::rows_x16,
        _ => super::interleave::rows_scalar,
    }
}

/// The kernel of `t` weights in the row layout, or in the interleaved one when `packed`.
fn kernel(level: SimdLevel, t: QType, packed: bool) -> RowsFn {
    if packed {
        x16_fn(level)
    } else {
        rows_fn(level, t)
    }
}

fn float_fn(level: SimdLevel) -> fn(QType, &[u8], &[f32]) -> f32 {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => super::dot_avx512::row_float,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => super::dot_avx2::row_float,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::NeonDot | SimdLevel::Neon => super::dot_neon::row_float,
        _ => dot_scalar::row_float,
    }
}

/// Runs the tasks of a product in parallel: the global rayon pool, or a [`HotPool`].
pub trait Parallel: Sync {
    /// Threads that run tasks.
    fn threads(&self) -> usize;
    /// Call `f(0) .. f(n_tasks - 1)` in parallel; return when all are done.
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// The global rayon pool.
pub struct Rayon;

impl Parallel for Rayon {
    fn threads(&self) -> usize {
        rayon::current_num_threads()
    }
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 1 {
            f(0);
        } else {
            (0..n_tasks).into_par_iter().for_each(f);
        }
    }
}

impl Parallel for HotPool {
    fn threads(&self) -> usize {
        HotPool::threads(self)
    }
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        HotPool::run(self, n_tasks, f)
    }
}

/// Rows per parallel work item for `rows` rows of `cols` weights on `threads` threads.
fn chunk_rows(rows: usize, cols: usize, threads: usize) -> usize {
    if rows * cols < PARALLEL_MIN_WEIGHTS || threads <= 1 {
        return rows.max(1);
    }
    // A few items per thread, so a thread slowed by a neighbour does not hold the others.
    let items = threads * 4;
    rows.div_ceil(items).max(4)
}

/// Rows per parallel task of one product: [`chunk_rows`], whole 16-row groups when `packed`.
fn job_chunk(rows: usize, cols: usize, threads: usize, packed: bool) -> usize {
    let c = chunk_rows(rows, cols, threads);
    if packed {
        c.next_multiple_of(super::interleave::GROUP)
    } else {
        c
    }
}

/// One product of a [`matvec_many`] batch: `out (rows) = W x`.
pub(crate) struct MatVec<'a> {
    pub t: QType,
    /// Whether `w` is in the 16-row interleaved layout.
    pub packed: bool,
    pub w: &'a [u8],
    pub rows: usize,
    pub out: &'a mut [f32],
}

/// Several products `out_i = W_i x` with the same `x` (e.g. the q, k and v projections), as one
/// parallel job: `x` is quantized once per block size and the rows of all matrices are split
/// over the threads together. Sizes are checked by the caller; `level` must be available.
pub(crate) fn matvec_many(
    level: SimdLevel,
    x: &[f32],
    jobs: &mut [MatVec<'_>],
    par: &dyn Parallel,
) {
    let cols = x.len();
    let threads = par.threads();
    // Chunks per job, and the first task index of each job.
    const MAX_JOBS: usize = 8;
    assert!(
        jobs.len() <= MAX_JOBS,
        "at most {MAX_JOBS} products per batch"
    );
    let mut first = [0usize; MAX_JOBS + 1];
    let mut chunk = [0usize; MAX_JOBS];
    let mut meta: [(QType, bool, &[u8], usize); MAX_JOBS] = [(QType::F32, false, &[], 0); MAX_JOBS];
    let mut outs: [Option<SharedMut<'_, f32>>; MAX_JOBS] = Default::default();
    let njobs = jobs.len();
    for (i, j) in jobs.iter_mut().enumerate() {
        chunk[i] = job_chunk(j.rows, cols, threads, j.packed);
        first[i + 1] = first[i] + j.rows.div_ceil(chunk[i]);
        meta[i] = (j.t, j.packed, j.w, j.rows);
        outs[i] = Some(SharedMut::new(&mut *j.out));
    }
    let n_tasks = first[njobs];
    let types = || meta[..njobs].iter().map(|m| m.0);
    let need32 = types().any(|t| !t.is_float() && !t.is_k_quant());
    let need256 = types().any(|t| t.is_k_quant());
    with_scratch(|s| {
        if need32 {
            s.acts.quantize(x, 1, cols, QK);
        }
        if need256 {
            s.acts_k.quantize(x, 1, cols, QK_K);
        }
        let (a32, a256) = (&s.acts, &s.acts_k);
        par.run(n_tasks, &|task| {
            let i = (0..njobs).find(|&i| task < first[i + 1]).unwrap_or(0);
            let (t, packed, w, rows) = meta[i];
            let r0 = (task - first[i]) * chunk[i];
            let r1 = (r0 + chunk[i]).min(rows);
            let rb = t.bytes_for(cols).unwrap_or(0);
            let w = &w[r0 * rb..r1 * rb];
            // SAFETY: each task writes its own rows r0..r1 of job i.
            let o = unsafe {
                outs[i]
                    .as_ref()
                    .map(|o| o.range(r0, r1))
                    .unwrap_or_default()
            };
            if t.is_float() {
                let f = float_fn(level);
                for (k, v) in o.iter_mut().enumerate() {
                    *v = f(t, &w[k * rb..(k + 1) * rb], x);
                }
            } else {
                let acts = if t.is_k_quant() { a256 } else { a32 };
                kernel(level, t, packed)(t, w, r1 - r0, acts, 0, 1, o, 1);
            }
        });
    });
}

/// Several products `out_i = x W_i^T` with the same `x` of `n` rows (the q, k and v
/// projections of a step): one parallel job when every matrix is interleaved and the integer
/// kernels apply (`x` quantized once, the rows of all matrices split over the threads together,
/// results written straight into each `out_i`); otherwise one [`matmul`] each. Each output row
/// gets the same numbers as from [`matmul`] alone. Sizes are checked by the caller.
pub(crate) fn matmul_many(
    level: SimdLevel,
    x: &[f32],
    n: usize,
    jobs: &mut [MatVec<'_>],
    par: &dyn Parallel,
) {
    if n == 1 {
        return matvec_many(level, x, jobs, par);
    }
    let cols = x.len() / n.max(1);
    let together = level == SimdLevel::Avx512Vnni
        && cfg!(target_arch = "x86_64")
        && (n < F32_GEMM_MIN_ROWS || int8_prefill_forced())
        && jobs.iter().all(|j| j.packed);
    if !together {
        for j in jobs.iter_mut() {
            matmul(level, j.t, j.packed, j.w, j.rows, cols, x, n, j.out, par);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        const MAX_JOBS: usize = 8;
        assert!(
            jobs.len() <= MAX_JOBS,
            "at most {MAX_JOBS} products per batch"
        );
        let threads = par.threads();
        let njobs = jobs.len();
        let mut first = [0usize; MAX_JOBS + 1];
        let mut chunk = [0usize; MAX_JOBS];
        let mut meta: [(QType, &[u8], usize); MAX_JOBS] = [(QType::F32, &[], 0); MAX_JOBS];
        let mut outs: [Option<SharedMut<'_, f32>>; MAX_JOBS] = Default::default();
        for (i, j) in jobs.iter_mut().enumerate() {
            chunk[i] = job_chunk(j.rows, cols, threads, true);
            first[i + 1] = first[i] + j.rows.div_ceil(chunk[i]);
            meta[i] = (j.t, j.w, j.rows);
            outs[i] = Some(SharedMut::new(&mut *j.out));
        }
        with_scratch(|s| {
            s.acts.quantize(x, n, cols, QK);
            let acts = &s.acts;
            par.run(first[njobs], &|task| {
                let i = (0..njobs).find(|&i| task < first[i + 1]).unwrap_or(0);
                let (t, w, rows) = meta[i];
                let r0 = (task - first[i]) * chunk[i];
                let r1 = (r0 + chunk[i]).min(rows);
                let rb = t.bytes_for(cols).unwrap_or(0);
                if let Some(o) = outs[i].as_ref() {
                    // SAFETY: this task writes columns r0..r1 of the n rows of job i's output
                    // (n, rows), which no other task writes; every index lies inside it.
                    unsafe {
                        super::dot_avx512::rows_x16_strided(
                            t,
                            &w[r0 * rb..r1 * rb],
                            r1 - r0,
                            acts,
                            0,
                            n,
                            o.ptr().add(r0),
                            1,
                            rows,
                        )
                    }
                }
            });
        });
    }
}

/// `out (n, rows) = x (n, cols) W^T` for W = `w` (rows of `row_bytes` bytes of type `t`, or
/// groups of 16 such rows interleaved when `packed`). Sizes are checked by the caller
/// (`QMatrix::matmul_with`); `level` must be available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    level: SimdLevel,
    t: QType,
    packed: bool,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    par: &dyn Parallel,
) {
    if n == 1 {
        let job = MatVec {
            t,
            packed,
            w,
            rows,
            out,
        };
        matvec_many(level, x, &mut [job], par);
        return;
    }
    let rb = t.bytes_for(cols).unwrap_or(0);
    // Weight rows per task: row-layout kernels take at most PREFILL_ROWS (the tile rows of a
    // task stay in cache across its activation groups); interleaved groups are read by the
    // broadcast kernel as a long contiguous stream, which the hardware prefetcher follows only
    // when a task keeps reading (the chunks of a mat-vec product).
    let chunk = job_chunk(rows, cols, par.threads(), packed).clamp(1, PREFILL_ROWS);
    if t.is_float() && n >= F32_GEMM_MIN_ROWS {
        // Float weights (dense checkpoints): tiles converted to f32 and the GEMM kernel.
        gemm_f32_tiles(t, false, w, rows, cols, x, n, out, par);
        return;
    }
    if t.is_float() {
        let f = float_fn(level);
        with_scratch(|s| {
            prefill(&mut s.tile, rows, n, chunk, out, par, |r0, nr, j0, g, o| {
                for i in 0..nr {
                    let wr = &w[(r0 + i) * rb..(r0 + i + 1) * rb];
                    for k in 0..g {
                        let xj = &x[(j0 + k) * cols..(j0 + k + 1) * cols];
                        o[i * n + k] = f(t, wr, xj);
                    }
                }
            })
        });
        return;
    }
    if n >= F32_GEMM_MIN_ROWS && !int8_prefill_forced() {
        gemm_f32_tiles(t, packed, w, rows, cols, x, n, out, par);
        return;
    }
    if packed && level == SimdLevel::Avx512Vnni {
        // Straight into `out` (no tile, no transpose pass): the many-product job with one product.
        let job = MatVec {
            t,
            packed,
            w,
            rows,
            out,
        };
        matmul_many(level, x, n, &mut [job], par);
        return;
    }
    let f = kernel(level, t, packed);
    let block = if t.is_k_quant() { QK_K } else { QK };
    with_scratch(|s| {
        s.acts.quantize(x, n, cols, block);
        let acts = &s.acts;
        prefill(&mut s.tile, rows, n, chunk, out, par, |r0, nr, j0, g, o| {
            f(t, &w[r0 * rb..(r0 + nr) * rb], nr, acts, j0, g, o, n)
        });
    });
}

/// From this many activation rows on, quantized products dequantize tiles of weight rows to f32
/// and multiply them with an f32 GEMM (f32 activations, as transformers computes) instead of the
/// 8-bit dot products: the unpacking is shared by all rows, and the GEMM kernel is faster than
/// the per-block integer products. `TESSERA_PREFILL_INT8=1` keeps the integer path (llama.cpp's
/// arithmetic) for every size.
pub const F32_GEMM_MIN_ROWS: usize = 64;
/// Whether `TESSERA_PREFILL_INT8` is set (read once, not per product).
fn int8_prefill_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os("TESSERA_PREFILL_INT8").is_some())
}

/// Weight rows per dequantized tile.
const GEMM_TILE_ROWS: usize = 64;

thread_local! {
    static GEMM_TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out (n, rows) = x (n, cols) W^T`, W dequantized `GEMM_TILE_ROWS` rows at a time, each tile a
/// task multiplied by the `gemm` crate's f32 kernel on its thread.
#[allow(clippy::too_many_arguments)]
fn gemm_f32_tiles(
    t: QType,
    packed: bool,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    par: &dyn Parallel,
) {
    let rb = t.bytes_for(cols).unwrap_or(0);
    let tiles = rows.div_ceil(GEMM_TILE_ROWS);
    let o = SharedMut::new(out);
    par.run(tiles, &|ti| {
        let r0 = ti * GEMM_TILE_ROWS;
        let nr = GEMM_TILE_ROWS.min(rows - r0);
        GEMM_TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            tile.resize(GEMM_TILE_ROWS * cols, 0.0);
            let tile = &mut tile[..nr * cols];
            let wt = &w[r0 * rb..(r0 + nr) * rb];
            if packed {
                super::interleave::dequantize_into(t, wt, cols, tile);
            } else {
                super::dequant::dequantize_into(t, wt, tile);
            }
            // SAFETY: the task writes columns r0..r0 + nr of every output row, which no other
            // task writes (disjoint column ranges of `out`); all pointers stay inside `x`,
            // `tile` and `out` for the sizes given (dst (n, nr) with row stride `rows`,
            // lhs x (n, cols), rhs tile^T (cols, nr)).
            unsafe {
                let dst = o.ptr().add(r0);
                gemm::gemm(
                    n,
                    nr,
                    cols,
                    dst,
                    1,
                    rows as isize,
                    false,
                    x.as_ptr(),
                    1,
                    cols as isize,
                    tile.as_ptr(),
                    cols as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
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

/// The prefill schedule: `f(r0, nr, j0, g, o)` computes weight rows `r0..r0 + nr` against
/// activation rows `j0..j0 + g`, writing `o[i * n + k]` (`o` starts at row `r0`, column `j0` of
/// the (rows, n) tile); the tile is then transposed into `out` (n, rows).
#[allow(clippy::too_many_arguments)]
fn prefill(
    tile: &mut Vec<f32>,
    rows: usize,
    n: usize,
    chunk: usize,
    out: &mut [f32],
    par: &dyn Parallel,
    f: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
) {
    if tile.len() < rows * n {
        tile.resize(rows * n, 0.0);
    }
    let tile = &mut tile[..rows * n];
    let chunk = chunk.max(1);
    let n_chunks = rows.div_ceil(chunk);
    {
        let t = SharedMut::new(tile);
        par.run(n_chunks, &|ci| {
            let r0 = ci * chunk;
            let r1 = (r0 + chunk).min(rows);
            // SAFETY: each task owns tile rows r0..r1.
            let t = unsafe { t.range(r0 * n, r1 * n) };
            for j0 in (0..n).step_by(ACT_GROUP) {
                let g = ACT_GROUP.min(n - j0);
                f(r0, r1 - r0, j0, g, &mut t[j0..]);
            }
        });
    }
    let tile = &*tile;
    let o = SharedMut::new(out);
    let per = n.div_ceil(par.threads() * 2).max(1);
    par.run(n.div_ceil(per), &|c| {
        for j in c * per..((c + 1) * per).min(n) {
            // SAFETY: each task owns output rows c*per..(c+1)*per.
            let oj = unsafe { o.range(j * rows, (j + 1) * rows) };
            for (r, v) in oj.iter_mut().enumerate() {
                *v = tile[r * n + j];
            }
        }
    });
}
