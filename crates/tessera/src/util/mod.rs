//! Small helpers shared by the rest of the crate.

pub mod alloc;
pub mod cpu;
pub mod fs;
pub mod process;
pub mod rng;

pub use tessera_pool as pool;
