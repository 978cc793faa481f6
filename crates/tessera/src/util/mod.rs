//! Small helpers shared by the rest of the crate.

pub mod fs;
pub mod pool;
pub mod rng;
