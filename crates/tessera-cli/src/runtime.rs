//! Process settings, made once in `main` before any thread starts (the environment may only
//! change while no other thread can read it).
//!
//! - `--threads N` becomes `RAYON_NUM_THREADS`, which rayon, the tensor engine and tessera's own
//!   pools read when they first start.
//! - For training, fine-tuning and encoder commands: element-wise engine ops run on the calling
//!   thread (`CANDLE_NUM_THREADS=1`, unless the user set it). The engine keeps a second thread
//!   pool for them beside rayon's (which runs the matrix products and the fused kernels); with
//!   both pools on the same cores their workers spin against each other, and the remaining
//!   element-wise ops of a step are small (residual adds, gradient sums). And the allocator keeps
//!   freed buffers ([`tessera::util::process::keep_freed_memory`]): each step frees and
//!   reallocates the same buffers, and fresh pages cost a page fault each (~7% of `bench embed`).
//!   Zero-filled buffers of 2 MiB or more are the exception (`main.rs`'s global allocator,
//!   [`tessera::util::process::ZeroMapAlloc`]): the engine's backward pass starts each gradient it
//!   accumulates from one and only reads it, so a fresh mapping (the kernel's zero page) costs
//!   less than a `memset` of reused memory on the calling thread.
//!
//! Measured on `tessera bench train` / `bench embed` (2 threads): see `BENCHMARKS.md`.

pub fn configure(threads: Option<usize>, tensor_workload: bool) {
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    if tensor_workload {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        tessera::util::process::keep_freed_memory();
    }
}
