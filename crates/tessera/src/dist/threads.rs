//! Ranks as threads of one process: a [`Communicator`] for testing the data-parallel loop
//! without a launcher. Sums are taken in rank order, so every rank gets bitwise the same result
//! and a run is deterministic.

use super::Communicator;
use crate::{Error, Result};
use std::sync::{Barrier, Mutex};

/// The shared state of `n` thread ranks; [`ThreadGroup::ranks`] hands out one communicator per
/// rank, each to be used by one thread.
pub struct ThreadGroup {
    size: usize,
    barrier: Barrier,
    /// Each rank's contribution to the collective in progress.
    slots: Mutex<Vec<Option<Vec<f64>>>>,
    /// The result of the collective in progress.
    result: Mutex<Vec<f64>>,
}

/// One rank of a [`ThreadGroup`].
pub struct ThreadRank<'g> {
    rank: usize,
    group: &'g ThreadGroup,
}

impl ThreadGroup {
    /// A group of `size` ranks.
    pub fn new(size: usize) -> ThreadGroup {
        let size = size.max(1);
        ThreadGroup {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![None; size]),
            result: Mutex::new(Vec::new()),
        }
    }

    /// The ranks' communicators, in rank order.
    pub fn ranks(&self) -> Vec<ThreadRank<'_>> {
        (0..self.size)
            .map(|rank| ThreadRank { rank, group: self })
            .collect()
    }

    /// Every rank puts `mine`; all get `combine(contributions in rank order)`.
    fn exchange(
        &self,
        rank: usize,
        mine: Vec<f64>,
        combine: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    ) -> Result<Vec<f64>> {
        fn poisoned<T>(_: T) -> Error {
            Error::Input("a thread rank panicked".into())
        }
        self.slots.lock().map_err(poisoned)?[rank] = Some(mine);
        if self.barrier.wait().is_leader() {
            let mut slots = self.slots.lock().map_err(poisoned)?;
            let all: Vec<Vec<f64>> = slots.iter_mut().map(|s| s.take().unwrap()).collect();
            *self.result.lock().map_err(poisoned)? = combine(&all);
        }
        self.barrier.wait();
        let out = self.result.lock().map_err(poisoned)?.clone();
        // Nobody may start the next collective before everyone has read this one's result.
        self.barrier.wait();
        Ok(out)
    }
}

impl ThreadRank<'_> {
    fn sum(&self, mine: Vec<f64>) -> Result<Vec<f64>> {
        self.group.exchange(self.rank, mine, |all| {
            let mut acc = all[0].clone();
            for v in &all[1..] {
                for (a, b) in acc.iter_mut().zip(v) {
                    *a += b;
                }
            }
            acc
        })
    }
}

impl Communicator for ThreadRank<'_> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.group.size
    }
    fn all_reduce_sum_f32(&self, bufs: &mut [Vec<f32>]) -> Result<()> {
        for b in bufs.iter_mut() {
            // f32 sums in rank order (the f64 carrier holds every f32 exactly; each partial
            // sum is rounded back to f32 as an f32 reduction would).
            let out =
                self.group
                    .exchange(self.rank, b.iter().map(|&x| x as f64).collect(), |all| {
                        let mut acc: Vec<f32> = all[0].iter().map(|&x| x as f32).collect();
                        for v in &all[1..] {
                            for (a, &x) in acc.iter_mut().zip(v) {
                                *a += x as f32;
                            }
                        }
                        acc.into_iter().map(f64::from).collect()
                    })?;
            for (d, s) in b.iter_mut().zip(out) {
                *d = s as f32;
            }
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let out = self.sum(buf.to_vec())?;
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let out =
            self.group
                .exchange(self.rank, buf.iter().map(|&x| x as f64).collect(), |all| {
                    all[root].clone()
                })?;
        for (d, s) in buf.iter_mut().zip(out) {
            *d = s as f32;
        }
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let out = self.group.exchange(
            self.rank,
            bytes.iter().map(|&b| f64::from(b)).collect(),
            |all| all[root].clone(),
        )?;
        *bytes = out.into_iter().map(|b| b as u8).collect();
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.group.barrier.wait();
        Ok(())
    }
    fn name(&self) -> &'static str {
        "threads"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reduce_and_broadcast_across_thread_ranks() {
        let g = ThreadGroup::new(3);
        std::thread::scope(|s| {
            for c in g.ranks() {
                s.spawn(move || {
                    let c = &c;
                    let r = c.rank() as f32;
                    let mut bufs = vec![vec![r, 1.0], vec![10.0 * r]];
                    c.all_reduce_sum_f32(&mut bufs).unwrap();
                    assert_eq!(bufs, vec![vec![3.0, 3.0], vec![30.0]]);
                    let mut x = [r; 2];
                    c.broadcast_f32(&mut x, 1).unwrap();
                    assert_eq!(x, [1.0, 1.0]);
                    let mut b = if c.rank() == 2 {
                        b"rank two".to_vec()
                    } else {
                        vec![]
                    };
                    c.broadcast_bytes(&mut b, 2).unwrap();
                    assert_eq!(b, b"rank two");
                    let mut f = [1.5];
                    c.all_reduce_sum_f64(&mut f).unwrap();
                    assert_eq!(f, [4.5]);
                    c.barrier().unwrap();
                });
            }
        });
    }
}
