//! Running a per-segment function on one thread or on a pool, with results in segment order
//! (so corpus sums and means are the same whatever the thread count).

use rayon::prelude::*;

/// Applies `f(scratch, i)` to every `i in 0..n` and returns the results in order.
///
/// `threads == 1` runs on the calling thread; `threads == 0` uses all cores; otherwise a pool of
/// that many threads. `init` makes one scratch value per worker.
pub fn map_segments<S, T, I, F>(n: usize, threads: usize, init: I, f: F) -> Vec<T>
where
    T: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) -> T + Sync + Send,
{
    if threads == 1 || n < 2 {
        let mut s = init();
        return (0..n).map(|i| f(&mut s, i)).collect();
    }
    let run = || {
        (0..n)
            .into_par_iter()
            .map_init(&init, |s, i| f(s, i))
            .collect()
    };
    if threads == 0 {
        run()
    } else {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(run),
            // A pool that cannot start (resource limits) falls back to the global one.
            Err(_) => run(),
        }
    }
}

/// Like [`map_segments`] with a fallible function; the first error (in segment order) wins.
pub fn try_map_segments<S, T, E, I, F>(n: usize, threads: usize, init: I, f: F) -> Result<Vec<T>, E>
where
    T: Send,
    E: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) -> Result<T, E> + Sync + Send,
{
    map_segments(n, threads, init, f).into_iter().collect()
}
