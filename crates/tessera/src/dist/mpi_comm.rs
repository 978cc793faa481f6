//! The MPI communicator (cargo feature `mpi`): Open MPI, or any MPI the `mpi` crate builds
//! against, initialized once per process at the `Serialized` threading level (calls are
//! serialized by a lock; the tensor engine's worker threads never call MPI).

use super::Communicator;
use crate::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;
use std::sync::Mutex;

/// The universe, dropped (MPI_Finalize) by [`finalize`].
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);
/// Serializes MPI calls from different threads.
static CALLS: Mutex<()> = Mutex::new(());

/// `MPI_COMM_WORLD`.
pub struct MpiComm {
    rank: usize,
    size: usize,
}

impl MpiComm {
    /// Initialize MPI (once per process).
    pub fn init() -> Result<MpiComm> {
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| Error::Config("MPI was initialized already (or could not be)".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(universe);
        Ok(MpiComm { rank, size })
    }

    fn world() -> SimpleCommunicator {
        SimpleCommunicator::world()
    }
}

/// Finalize MPI if it was initialized (every rank must reach this).
pub fn finalize() {
    let _calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
    drop(UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// MPI_Abort on the world when MPI is up; returns otherwise.
pub fn abort(code: i32) {
    let up = UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).is_some();
    if up {
        SimpleCommunicator::world().abort(code);
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, bufs: &mut [Vec<f32>]) -> Result<()> {
        let _calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        let world = Self::world();
        let sends: Vec<Vec<f32>> = bufs.to_vec();
        // Every bucket's all-reduce in flight at once (non-blocking), then wait for all.
        mpi::request::scope(|scope| {
            let reqs: Vec<_> = sends
                .iter()
                .zip(bufs.iter_mut())
                .map(|(s, r)| {
                    world.immediate_all_reduce_into(
                        scope,
                        &s[..],
                        &mut r[..],
                        SystemOperation::sum(),
                    )
                })
                .collect();
            for r in reqs {
                r.wait();
            }
        });
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let _calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        let send = buf.to_vec();
        Self::world().all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let _calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        Self::world()
            .process_at_rank(root as i32)
            .broadcast_into(buf);
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let _calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        let world = Self::world();
        let from = world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        from.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        from.broadcast_into(&mut bytes[..]);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        let _calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        Self::world().barrier();
        Ok(())
    }
    fn name(&self) -> &'static str {
        "MPI"
    }
}
