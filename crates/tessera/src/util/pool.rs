//! `HotPool`: a small thread pool for the many short parallel loops of a decode step.
//!
//! A decode step of a small model is a few hundred products of a few microseconds each. Handing
//! each to a general work-stealing pool costs a wake-up per product (tens of microseconds on a
//! virtual machine), more than the product. Here the workers stay hot: after a job they spin on an
//! epoch counter for a while (`SPIN`), then park; the caller takes part in every job, so a pool of
//! `n` threads starts `n - 1` workers.
//!
//! A job is `n_tasks` calls of `f(task)`; tasks are claimed from a shared counter, so a worker
//! slowed by a neighbour process does not hold the others back. `run` returns when every task is
//! done and every worker has let go of `f`.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(5);

type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// One worker's parking flag, on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    /// Set while the worker is parked (or about to park).
    sleeping: AtomicBool,
}

/// `state` layout: the job's epoch in the high 32 bits, `CLOSED` once the caller has finished
/// the job (no worker may join after that), and the number of workers inside it below.
const CLOSED: u64 = 1 << 31;
const ACTIVE: u64 = CLOSED - 1;

struct Shared {
    /// Epoch, closed flag and active workers of the current job (see `CLOSED`).
    state: AtomicU64,
    /// The next task index to claim.
    next: AtomicUsize,
    /// Tasks of the current job.
    n_tasks: AtomicUsize,
    /// The current job's function, lifetime erased; valid while the job is open or has workers.
    job: UnsafeCell<Option<Task<'static>>>,
    stop: AtomicBool,
    slots: Vec<Slot>,
}

// SAFETY: `job` is written only by `run` while the previous job is closed with no worker inside
// (so nobody reads it), and read by a worker only after it joined an open job (counted in
// `state`), which `run` waits for before it returns.
unsafe impl Sync for Shared {}

/// A pool of threads kept hot for short jobs. See the module documentation.
pub struct HotPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes callers (a job at a time).
    lock: std::sync::Mutex<()>,
}

impl HotPool {
    /// A pool of `threads` threads in all (the caller counts as one; at least 1).
    pub fn new(threads: usize) -> Self {
        let n_workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(CLOSED),
            next: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            stop: AtomicBool::new(false),
            slots: (0..n_workers).map(|_| Slot::default()).collect(),
        });
        let workers = (0..n_workers)
            .map(|w| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("tessera-hot-{w}"))
                    .spawn(move || worker(&s, w))
                    .expect("spawn a pool thread")
            })
            .collect();
        HotPool {
            shared,
            workers,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// A pool with `RAYON_NUM_THREADS` threads when set (what `tessera --threads` sets), else one
    /// per available core.
    pub fn from_env() -> Self {
        let n = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        Self::new(n)
    }

    /// Threads in the pool, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Call `f(0) .. f(n_tasks - 1)`, spread over the pool's threads; returns when all are done.
    /// A panic in `f` aborts the process (it cannot be carried across the workers safely).
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the previous job is closed and has no worker inside (checked when it ended),
        // so none reads `job` now; the lifetime is erased only until this job is closed empty.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<Task<'_>, Task<'static>>(f));
        }
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        let epoch = (s.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        // Open the job: new epoch, not closed, nobody inside.
        s.state.store(epoch << 32, Ordering::SeqCst);
        for (w, slot) in s.slots.iter().enumerate() {
            if slot.sleeping.swap(false, Ordering::SeqCst) {
                self.workers[w].thread().unpark();
            }
        }
        let guard = AbortOnPanic;
        claim_tasks(s, f, n_tasks);
        // Close the job once no worker is inside; a worker that has not joined yet (e.g. not
        // scheduled) never will, so it cannot hold the caller up.
        let mut spins = 0u32;
        loop {
            let cur = s.state.load(Ordering::Acquire);
            if cur & ACTIVE == 0
                && s.state
                    .compare_exchange(cur, cur | CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break;
            }
            backoff(&mut spins);
        }
        std::mem::forget(guard);
        // SAFETY: the job is closed with no worker inside.
        unsafe {
            *s.job.get() = None;
        }
    }
}

/// Spin briefly, then yield the core (a peer we wait for may be waiting for it).
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 256 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Aborts if dropped during unwinding: a worker may still be running the job borrowed from the
/// unwinding frame.
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        eprintln!("tessera: a parallel task panicked; aborting");
        std::process::abort();
    }
}

fn claim_tasks(s: &Shared, f: Task<'_>, n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared, w: usize) {
    let slot = &s.slots[w];
    let mut seen = 0u64;
    loop {
        // Wait for a new open job: spin (yielding now and then), then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let cur = s.state.load(Ordering::Acquire);
            let epoch = cur >> 32;
            if epoch != seen {
                if cur & CLOSED != 0 {
                    seen = epoch; // finished without us
                    continue;
                }
                // Join the open job.
                if s.state
                    .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    seen = epoch;
                    break;
                }
                continue;
            }
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < 1 << 10 || start.elapsed() < SPIN {
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            // SeqCst pairs with `run`: either it sees `sleeping` and unparks, or this sees the
            // new job.
            slot.sleeping.store(true, Ordering::SeqCst);
            if s.state.load(Ordering::SeqCst) >> 32 == seen && !s.stop.load(Ordering::Acquire) {
                std::thread::park();
            }
            slot.sleeping.store(false, Ordering::Release);
            spins = 0;
        }
        // SAFETY: we are counted inside the open job, so `run` has not returned and `job` is
        // its function until we leave.
        if let Some(f) = unsafe { *s.job.get() } {
            let guard = AbortOnPanic;
            claim_tasks(s, f, s.n_tasks.load(Ordering::Relaxed));
            std::mem::forget(guard);
        }
        s.state.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for HotPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A slice that parallel tasks write to at disjoint indices.
#[derive(Clone, Copy)]
pub struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: tasks write disjoint ranges (the caller's contract on `range`).
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Wrap `s` for disjoint writes from several tasks.
    pub fn new(s: &'a mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _life: std::marker::PhantomData,
        }
    }

    /// The start of the slice, for kernels that write through strided pointers (each task its
    /// own elements, as with [`SharedMut::range`]).
    pub fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// The length of the whole slice.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `start..end` (panics when out of bounds).
    ///
    /// # Safety
    /// No two live results may overlap (each task takes its own range).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, end: usize) -> &mut [T] {
        assert!(
            start <= end && end <= self.len,
            "range {start}..{end} of {}",
            self.len
        );
        std::slice::from_raw_parts_mut(self.ptr.add(start), end - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3, 5] {
            let pool = HotPool::new(threads);
            for n in [0, 1, 2, 7, 100, 1000] {
                let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn many_short_jobs_and_disjoint_writes() {
        let pool = HotPool::new(3);
        let mut out = vec![0u64; 64];
        for round in 0..2000u64 {
            let w = SharedMut::new(&mut out);
            pool.run(8, &|t| {
                // SAFETY: task t owns elements 8t..8t+8.
                let o = unsafe { w.range(8 * t, 8 * t + 8) };
                for (i, v) in o.iter_mut().enumerate() {
                    *v = round * 100 + (8 * t + i) as u64;
                }
            });
            assert!(out
                .iter()
                .enumerate()
                .all(|(i, &v)| v == round * 100 + i as u64));
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = HotPool::new(2);
        std::thread::sleep(SPIN * 3);
        let sum = AtomicU64::new(0);
        pool.run(100, &|i| {
            sum.fetch_add(i as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }
}
