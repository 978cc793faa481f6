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

#![warn(clippy::undocumented_unsafe_blocks)]

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};
use sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use sync::{thread, Arc, Mutex};

/// The synchronisation primitives: the standard library's, or loom's when model-checking
/// (`--cfg loom`), which explores every interleaving of the hand-off below.
mod sync {
    #[cfg(loom)]
    pub use loom::{
        sync::{atomic, Arc, Mutex},
        thread,
    };
    #[cfg(not(loom))]
    pub use std::{
        sync::{atomic, Arc, Mutex},
        thread,
    };

    /// The cell holding the current job's function (loom checks that its reads and writes are
    /// ordered by the protocol, never concurrent).
    pub struct JobCell<T>(UnsafeRawCell<T>);

    impl<T: Copy> JobCell<T> {
        pub fn new(v: T) -> Self {
            JobCell(UnsafeRawCell::new(v))
        }

        /// # Safety
        /// No other thread reads or writes the cell meanwhile.
        pub unsafe fn set(&self, v: T) {
            #[cfg(loom)]
            // SAFETY: the caller's contract.
            self.0.with_mut(|p| unsafe { *p = v });
            #[cfg(not(loom))]
            // SAFETY: the caller's contract.
            unsafe {
                *self.0.get() = v
            };
        }

        /// # Safety
        /// No other thread writes the cell meanwhile.
        pub unsafe fn get(&self) -> T {
            #[cfg(loom)]
            // SAFETY: the caller's contract.
            return self.0.with(|p| unsafe { *p });
            #[cfg(not(loom))]
            // SAFETY: the caller's contract.
            unsafe {
                *self.0.get()
            }
        }
    }

    #[cfg(loom)]
    use loom::cell::UnsafeCell as UnsafeRawCell;
    #[cfg(not(loom))]
    use std::cell::UnsafeCell as UnsafeRawCell;

    /// A pause in a spin loop (under loom: a yield, so the model checker can run the peer).
    #[inline]
    pub fn spin() {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::hint::spin_loop();
    }
}

/// How long an idle worker spins before it parks (under loom: not at all).
const SPIN: Duration = Duration::from_millis(5);
/// Spins before the clock is consulted.
const SPINS: u32 = if cfg!(loom) { 0 } else { 1 << 10 };

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
    job: sync::JobCell<Option<Task<'static>>>,
    /// The first panic of the current job's tasks, carried to the caller of `run`.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stop: AtomicBool,
    slots: Vec<Slot>,
}

// SAFETY: `job` is written only by `run` while the previous job is closed with no worker inside
// (so nobody reads it), and read by a worker only after it joined an open job (counted in
// `state`), which `run` waits for before it returns. The function it holds is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`; the function reference in `job` is `Sync`, so using it from the
// workers is allowed.
unsafe impl Send for Shared {}

/// A pool of threads kept hot for short jobs. See the module documentation.
pub struct HotPool {
    shared: Arc<Shared>,
    workers: Vec<thread::JoinHandle<()>>,
    /// Serializes callers (a job at a time).
    lock: Mutex<()>,
}

impl HotPool {
    /// A pool of `threads` threads in all (the caller counts as one; at least 1).
    pub fn new(threads: usize) -> Self {
        let n_workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(CLOSED),
            next: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            job: sync::JobCell::new(None),
            panic: Mutex::new(None),
            stop: AtomicBool::new(false),
            slots: (0..n_workers).map(|_| Slot::default()).collect(),
        });
        let workers = (0..n_workers)
            .map(|w| {
                let s = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("tessera-hot-{w}"))
                    .spawn(move || worker(&s, w))
                    .expect("spawn a pool thread")
            })
            .collect();
        HotPool {
            shared,
            workers,
            lock: Mutex::new(()),
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
    ///
    /// A panic in `f` is carried to the caller, as `rayon::scope` does: the tasks not yet
    /// started are skipped, the ones running finish, then `run` resumes the first panic (the
    /// pool stays usable).
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the previous job is closed and has no worker inside (checked when it ended),
        // so none reads `job` now; the lifetime is erased only until this job is closed empty,
        // before `run` returns or unwinds.
        unsafe {
            s.job
                .set(Some(std::mem::transmute::<Task<'_>, Task<'static>>(f)));
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
        // SAFETY: the job is closed with no worker inside.
        unsafe {
            s.job.set(None);
        }
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(guard); // the next caller may start (and the lock is not poisoned by the panic)
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

/// Spin briefly, then yield the core (a peer we wait for may be waiting for it).
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 256 {
        sync::spin();
    } else {
        thread::yield_now();
    }
}

/// Run tasks of the current job until none is left. A panicking task is caught here (no panic
/// crosses the pool's own code, so the job always closes): the first panic is kept for `run` to
/// resume, and the tasks not yet claimed are skipped.
fn claim_tasks(s: &Shared, f: Task<'_>, n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
            s.next.store(n_tasks, Ordering::Relaxed);
            let mut first = s.panic.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(p);
            }
            break;
        }
    }
}

fn worker(s: &Shared, w: usize) {
    let slot = &s.slots[w];
    let mut seen = 0u64;
    loop {
        // Wait for a new open job: spin (yielding now and then), then park.
        let start = (!cfg!(loom)).then(Instant::now);
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
            // The clock is read only every 64th turn (with the yield): a read per turn was a
            // tenth of an idle worker's time.
            if !cfg!(loom) && !spins.is_multiple_of(64) {
                sync::spin();
                continue;
            }
            if spins < SPINS || start.is_some_and(|t| t.elapsed() < SPIN) {
                thread::yield_now();
                continue;
            }
            // SeqCst pairs with `run`: either it sees `sleeping` and unparks, or this sees the
            // new job.
            slot.sleeping.store(true, Ordering::SeqCst);
            if s.state.load(Ordering::SeqCst) >> 32 == seen && !s.stop.load(Ordering::Acquire) {
                thread::park();
            }
            slot.sleeping.store(false, Ordering::Release);
            spins = 0;
        }
        // SAFETY: we are counted inside the open job, so `run` has not returned and `job` is
        // its function until we leave (`run` writes it only when the job is closed empty).
        if let Some(f) = unsafe { s.job.get() } {
            claim_tasks(s, f, s.n_tasks.load(Ordering::Relaxed));
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

// SAFETY: a `SharedMut` stands for the `&mut [T]` it was made from, which may move to another
// thread when `T: Send`; the only access is `range`, whose contract makes the parts disjoint.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: sharing it lets several threads call `range`, each for its own part (the contract of
// `range`), which is what `&mut [T]`'s `split_at_mut` allows between threads when `T: Send`.
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
        // SAFETY: `start..end` lies inside the slice (asserted above), which lives for `'a`;
        // the caller guarantees no other live reference overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3, 5] {
            let pool = HotPool::new(threads);
            let sizes: &[usize] = if cfg!(miri) {
                &[0, 1, 2, 7]
            } else {
                &[0, 1, 2, 7, 100, 1000]
            };
            for &n in sizes {
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
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        for round in 0..rounds {
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
    fn a_panicking_task_reaches_the_caller_and_the_pool_goes_on() {
        for threads in [1, 2, 3] {
            let pool = HotPool::new(threads);
            for bad in [0, 5, 9] {
                let ran = AtomicU64::new(0);
                let r = catch_unwind(AssertUnwindSafe(|| {
                    pool.run(10, &|i| {
                        if i == bad {
                            panic!("task {i} failed");
                        }
                        ran.fetch_add(1, Ordering::Relaxed);
                    })
                }));
                let msg = r.expect_err("the panic reaches the caller");
                let msg = msg.downcast_ref::<String>().expect("the payload is kept");
                assert_eq!(msg, &format!("task {bad} failed"));
                assert!(ran.load(Ordering::Relaxed) < 10);
                // The pool still runs every task of the next job.
                let sum = AtomicU64::new(0);
                pool.run(100, &|i| {
                    sum.fetch_add(i as u64, Ordering::Relaxed);
                });
                assert_eq!(sum.load(Ordering::Relaxed), 4950, "threads={threads}");
            }
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

/// Model checks of the hand-off (`RUSTFLAGS="--cfg loom" cargo test --release -p tessera-pool`):
/// every interleaving of the caller and a worker, within loom's preemption bound, runs each
/// task exactly once, never reads the job cell while it is written, never loses a wake-up
/// (a lost one would deadlock, which loom reports), and shuts down cleanly.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    #[test]
    fn two_jobs_each_task_once() {
        model(|| {
            let pool = HotPool::new(2);
            for round in 1..=2u64 {
                let hits = [AtomicU64::new(0), AtomicU64::new(0)];
                pool.run(2, &|i| {
                    hits[i].fetch_add(round, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round));
            }
        });
    }

    #[test]
    fn a_panic_is_carried_and_the_job_closes() {
        model(|| {
            let pool = HotPool::new(2);
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(2, &|i| {
                    if i == 1 {
                        panic!("boom");
                    }
                })
            }));
            assert!(r.is_err());
            let ran = AtomicU64::new(0);
            pool.run(2, &|_| {
                ran.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(ran.load(Ordering::Relaxed), 2);
        });
    }
}
