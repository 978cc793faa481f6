//! Data-parallel training across processes: the [`Communicator`] the training loop talks to,
//! the process's place in the job ([`Layout`], read from the launcher's environment), and the
//! world communicator of this process ([`world`]).
//!
//! One process per rank, as clusters launch jobs (`mpirun`, Slurm's `srun`, a Kubernetes
//! MPIJob): every rank runs the same command, reads its shard of every global batch
//! ([`crate::train::run::Shard`]), and the loop sums gradients across ranks with one bucketed
//! all-reduce per optimizer step. Implementations:
//! - [`Single`]: one process, every call a no-op (what a plain `tessera train` uses);
//! - `MpiComm` (cargo feature `mpi`): Open MPI through the `mpi` crate;
//! - [`threads::ThreadGroup`]: ranks as threads of one process (tests of the loop's
//!   equivalence, without a launcher).
//!
//! A GPU implementation (NCCL's all-reduce through `cudarc`) fits the same trait; see
//! `docs/distributed.md`.

#[cfg(feature = "mpi")]
mod mpi_comm;
pub mod threads;

#[cfg(feature = "mpi")]
pub use mpi_comm::MpiComm;

use crate::{Error, Result};
use std::sync::OnceLock;

/// Collective operations among the ranks of a job. Every rank must make the same calls in the
/// same order (as MPI requires); a rank that fails stops the job ([`abort`]).
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn size(&self) -> usize;
    /// Sum every buffer element-wise across ranks, in place (one all-reduce per buffer; an
    /// implementation may keep them all in flight at once). Every rank ends with the same values.
    fn all_reduce_sum_f32(&self, bufs: &mut [Vec<f32>]) -> Result<()>;
    /// Sum a few f64 values across ranks, in place (step statistics, flags).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Overwrite `buf` on every rank with rank `root`'s.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Replace `bytes` on every rank with rank `root`'s (any length: a tokenizer trained on
    /// rank 0, which every rank must share exactly).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Wait until every rank arrives.
    fn barrier(&self) -> Result<()>;
    /// The engine's name, for `tessera info --system` and logs.
    fn name(&self) -> &'static str;
}

/// One process: the job is this rank alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _bufs: &mut [Vec<f32>]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "single process"
    }
}

/// Where this process sits in a job, as the launcher's environment says (before any
/// communicator exists): Open MPI's `mpirun` (`OMPI_COMM_WORLD_*`), PMIx (`srun --mpi=pmix`,
/// `PMIX_RANK`), MPICH/Hydra and Slurm's PMI-2 (`PMI_RANK`, `PMI_SIZE`, `MPI_LOCALNRANKS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub rank: usize,
    pub size: usize,
    /// Ranks on this node, and this one's index among them.
    pub local_rank: usize,
    pub local_size: usize,
    /// The variable family it was read from (`None`: not launched as part of a job).
    pub launcher: Option<&'static str>,
}

impl Layout {
    /// A process on its own.
    pub const SINGLE: Layout = Layout {
        rank: 0,
        size: 1,
        local_rank: 0,
        local_size: 1,
        launcher: None,
    };

    /// Read from the process environment.
    pub fn from_env() -> Layout {
        Layout::from_vars(|k| std::env::var(k).ok())
    }

    /// Read through `var` (tests pass their own map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Layout {
        // Leading digits: Slurm writes per-node counts as `2(x3)`.
        let num = |k: &str| {
            var(k).and_then(|v| {
                let d: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
                d.parse::<usize>().ok()
            })
        };
        let families: [(&'static str, &str, &str, &str, &str); 3] = [
            (
                "Open MPI",
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE",
            ),
            (
                "PMIx",
                "PMIX_RANK",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
                "SLURM_NTASKS_PER_NODE",
            ),
            (
                "PMI",
                "PMI_RANK",
                "PMI_SIZE",
                "MPI_LOCALRANKID",
                "MPI_LOCALNRANKS",
            ),
        ];
        for (name, r, s, lr, ls) in families {
            if let Some(rank) = num(r) {
                let size = num(s).unwrap_or(rank + 1).max(rank + 1);
                let local_size = num(ls).unwrap_or(size).clamp(1, size);
                return Layout {
                    rank,
                    size,
                    local_rank: num(lr).unwrap_or(0).min(local_size - 1),
                    local_size,
                    launcher: Some(name),
                };
            }
        }
        Layout::SINGLE
    }

    /// Worker threads each rank should use when the user chose none: the cores this process may
    /// run on (`cores`, after any binding the launcher applied), shared by the ranks on this node
    /// that share them, so that ranks × threads ≤ cores.
    pub fn threads_per_rank(&self, cores: usize, all_cores: usize) -> usize {
        if cores < all_cores {
            // The launcher bound this rank to its own cores: use them all.
            cores.max(1)
        } else {
            (cores / self.local_size.max(1)).max(1)
        }
    }
}

static WORLD: OnceLock<Box<dyn Communicator>> = OnceLock::new();

/// The job this process belongs to: with the `mpi` feature and a launcher's environment, MPI is
/// initialized here (once); otherwise the process is a job of its own ([`Single`]). A process
/// launched as one of several ranks by a build without MPI is refused, rather than running N
/// independent copies that would overwrite each other's output.
pub fn init() -> Result<&'static dyn Communicator> {
    if let Some(w) = WORLD.get() {
        return Ok(w.as_ref());
    }
    let layout = Layout::from_env();
    let comm: Box<dyn Communicator> = if layout.size > 1 {
        #[cfg(feature = "mpi")]
        {
            Box::new(MpiComm::init()?)
        }
        #[cfg(not(feature = "mpi"))]
        {
            return Err(Error::Config(format!(
                "this process is rank {} of {} ({} launcher), but tessera was built without MPI \
                 support: rebuild with `cargo build --release --features mpi` (needs Open MPI, \
                 Debian packages openmpi-bin libopenmpi-dev libclang-dev)",
                layout.rank,
                layout.size,
                layout.launcher.unwrap_or("?")
            )));
        }
    } else {
        Box::new(Single)
    };
    Ok(WORLD.get_or_init(|| comm).as_ref())
}

/// The world communicator ([`init`] if nothing did yet; [`Single`] when that fails, which
/// [`init`]'s caller reports).
pub fn world() -> &'static dyn Communicator {
    match init() {
        Ok(w) => w,
        Err(_) => &Single,
    }
}

/// Rank 0's `make()` on every rank: rank 0 makes it, the others receive its bytes (what must be
/// identical across ranks but may not come out the same when each rank makes it: a tokenizer
/// trained with hash-ordered ties).
pub fn from_root(
    comm: &dyn Communicator,
    make: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let mut bytes = if comm.rank() == 0 {
        make()?
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(&mut bytes, 0)?;
    Ok(bytes)
}

/// Rank 0's tokenizer on every rank (see [`from_root`]); `tok` itself in one process.
pub fn share_tokenizer(
    comm: &dyn Communicator,
    tok: crate::tokenizer::Tokenizer,
) -> Result<crate::tokenizer::Tokenizer> {
    if comm.size() == 1 {
        return Ok(tok);
    }
    let bytes = from_root(comm, || Ok(tok.to_json()?.into_bytes()))?;
    crate::tokenizer::Tokenizer::from_bytes(&bytes)
}

/// Whether this process is rank 0 (the one that writes checkpoints, metrics and progress).
pub fn is_root() -> bool {
    world().rank() == 0
}

/// End the job's communication cleanly (MPI_Finalize); call once, at the end of `main`.
pub fn finalize() {
    #[cfg(feature = "mpi")]
    mpi_comm::finalize();
}

/// Stop every rank of the job after a failure on this one (MPI_Abort: the launcher ends the
/// others at once instead of leaving them waiting in a collective). Returns when there is no
/// job to stop.
pub fn abort(code: i32) {
    #[cfg(feature = "mpi")]
    mpi_comm::abort(code);
    let _ = code;
}

/// CPUs online on this machine (`/sys/devices/system/cpu/online`, e.g. `0-15`), whatever this
/// process is bound to.
pub fn online_cpus() -> Option<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut n = 0;
    for part in s.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
    }
    Some(n)
}

/// This rank's part of `n` items split into `size` contiguous, balanced parts (the first
/// `n % size` ranks take one more).
pub fn split(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    let (q, r) = (n / size, n % size);
    let start = rank * q + rank.min(r);
    let len = q + usize::from(rank < r);
    start..start + len
}

/// Fails unless every rank holds the same `value` (e.g. a hash of the weights: ranks that
/// diverged are a bug, and their checkpoints would disagree).
pub fn check_same(comm: &dyn Communicator, value: u64, what: &str) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    // Compare in 16-bit pieces (exact in f64 sums): the sum equals size × mine on every rank
    // iff all agree piecewise (checked on every rank, so all ranks decide the same).
    let mine: Vec<f64> = (0..4)
        .map(|i| ((value >> (16 * i)) & 0xFFFF) as f64)
        .collect();
    let mut sums = mine.clone();
    let mut squares: Vec<f64> = mine.iter().map(|x| x * x).collect();
    sums.append(&mut squares);
    comm.all_reduce_sum_f64(&mut sums)?;
    let n = comm.size() as f64;
    // Equal values iff the variance of each piece is zero: n·Σx² == (Σx)².
    let same = (0..4).all(|i| n * sums[4 + i] == sums[i] * sums[i]);
    if same {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "ranks disagree on {what}: data-parallel training diverged across ranks"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn split_is_balanced_contiguous_and_covers() {
        for n in 0..20 {
            for size in 1..6 {
                let mut next = 0;
                for r in 0..size {
                    let g = split(n, r, size);
                    assert_eq!(g.start, next);
                    assert!(g.len() == n / size || g.len() == n / size + 1);
                    next = g.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn layout_from_launcher_variables() {
        let vars = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| m.get(k).cloned()
        };
        assert_eq!(Layout::from_vars(vars(&[])), Layout::SINGLE);
        let l = Layout::from_vars(vars(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]));
        assert_eq!((l.rank, l.size, l.local_rank, l.local_size), (3, 8, 1, 2));
        assert_eq!(l.launcher, Some("Open MPI"));
        let l = Layout::from_vars(vars(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]));
        assert_eq!((l.rank, l.size, l.local_size), (1, 2, 2));
        // Two ranks on a node of 2 unbound cores: one thread each; bound to one core: that one.
        assert_eq!(l.threads_per_rank(2, 2), 1);
        assert_eq!(l.threads_per_rank(1, 2), 1);
        assert_eq!(Layout::SINGLE.threads_per_rank(16, 16), 16);
    }

    #[test]
    fn check_same_finds_a_rank_that_differs() {
        let group = threads::ThreadGroup::new(3);
        let results: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = group
                .ranks()
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let c = &c;
                        let same = check_same(c, 42, "x").is_ok();
                        let v = if c.rank() == 2 { 7 } else { 42 };
                        let differ = check_same(c, v, "x").is_err();
                        same && differ
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results, vec![true; 3]);
    }
}
