//! A small, fast, seedable random number generator whose whole state can be saved.
//!
//! The engine's own CPU random numbers cannot be seeded, so everything that must be reproducible
//! (weight init, dropout masks, batch order, sampling) draws from this generator instead.

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;
use serde::{Deserialize, Serialize};

/// xoshiro256** (the `rand_xoshiro` crate) seeded by splitmix64; the state is four words and
/// serializes exactly (as `{"s": [...]}`, the layout checkpoints have always stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rng(Xoshiro256StarStar);

impl Rng {
    /// A generator seeded from one number; equal seeds give equal streams.
    pub fn new(seed: u64) -> Self {
        Rng(Xoshiro256StarStar::seed_from_u64(seed))
    }

    /// Stream `k` of `seed`: a generator that depends on the two numbers alone (an epoch's batch
    /// order, a dropout mask's chunk), so a resumed run or another thread finds the same draws.
    pub fn derived(seed: u64, k: u64) -> Self {
        Rng::new(seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) as f32 (24 bits).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u1 = self.uniform();
            if u1 > f64::MIN_POSITIVE {
                let u2 = self.uniform();
                return (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }

    /// A new independent generator derived from this one (advances this one).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_roundtrip() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved = serde_json::to_string(&a).unwrap();
        let mut c: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(a.next_u64(), c.next_u64());
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        // The layout earlier checkpoints stored.
        let old: Rng = serde_json::from_str(r#"{"s":[1,2,3,4]}"#).unwrap();
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"s":[1,2,3,4]}"#);
    }

    #[test]
    fn stream_is_xoshiro256starstar_seeded_by_splitmix64() {
        // The first outputs for seed 42 of the generator tessera has always used (so seeded runs
        // and saved checkpoints keep their streams), computed independently in Python.
        let mut r = Rng::new(42);
        let want = [
            1546998764402558742u64,
            6990951692964543102,
            12544586762248559009,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = Rng::new(3);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let k = r.below(7);
            seen[k] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
