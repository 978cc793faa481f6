//! Process settings for training on the CPU, applied once before the first step.
//!
//! - Element-wise engine ops run on the calling thread (`CANDLE_NUM_THREADS=1`, unless the user
//!   set it). The engine keeps a second thread pool for them beside rayon's (which runs the matrix
//!   products and the fused kernels); with both pools on the same cores, their workers spin
//!   against each other. The remaining engine element-wise ops of a training step are small
//!   (residual adds and gradient sums), so one thread costs little and the spinning goes away.
//! - The allocator keeps freed memory for reuse (glibc: no `mmap` for buffers under 256 MiB, no
//!   trimming below 1 GiB): every step frees and reallocates the same activation and gradient
//!   buffers, and fresh pages from the kernel cost a page fault each (over a million per
//!   benchmark run before this). Peak memory stays that of one step plus what is kept.
//!
//! Measured on `tessera bench train` (2 threads): see `BENCHMARKS.md`.

use std::sync::Once;

static ONCE: Once = Once::new();

/// Apply the settings above (idempotent; a no-op where they do not apply).
pub fn prepare_for_training() {
    ONCE.call_once(|| {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            // Read by the engine when its element-wise pool is first used, which is later.
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        keep_freed_memory();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_TOP_PAD: i32 = -2;
    const M_MMAP_THRESHOLD: i32 = -3;
    // Respect explicit settings from the environment.
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
    {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is thread-safe.
    unsafe {
        if mallopt(M_MMAP_THRESHOLD, 256 << 20) == 0 {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
        }
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
