//! Quantized block formats (GGML/GGUF) and their kernels.
//!
//! - [`formats`]: the types ([`QType`]), their ids, block sizes and byte layouts.
//! - [`dequant`]: scalar reference decoding of every format (to integers + scales, and to f32).
//! - [`quantize`]: reference quantizers (for building weights and tests) and the activation
//!   quantizer ([`Acts`]: Q8 blocks of 32 or 256, as llama.cpp quantizes activations).
//! - [`dot_scalar`], `dot_avx512`, `dot_avx2` (x86-64), `dot_neon` (aarch64): one weight row times
//!   activation rows, portable and SIMD; every SIMD kernel is tested against the portable one.
//! - [`QMatrix`]: a weight matrix kept quantized, with `matmul` (`x W^T`) split over rayon threads.

pub mod dequant;
pub mod dot_scalar;
pub mod formats;
pub mod matmul;
pub mod qmatrix;
pub mod quantize;

#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod dot_neon;

pub use formats::QType;
pub use matmul::{Parallel, Rayon};
pub use qmatrix::{matvec_many, QMatrix};
pub use quantize::{quantize, Acts};

use std::sync::OnceLock;

/// The kernel family a product runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    /// x86-64 AVX-512 F/BW/VL with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// aarch64 NEON with the dot-product instructions (`sdot`, Armv8.2 `dotprod`).
    NeonDot,
    /// aarch64 NEON (widening multiplies instead of `sdot`).
    Neon,
    /// Portable code.
    Scalar,
}

impl SimdLevel {
    /// All levels, fastest first.
    pub const ALL: [SimdLevel; 5] = [
        SimdLevel::Avx512Vnni,
        SimdLevel::Avx2,
        SimdLevel::NeonDot,
        SimdLevel::Neon,
        SimdLevel::Scalar,
    ];

    /// The name printed by `tessera info --system`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Avx512Vnni => "avx512-vnni",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::NeonDot => "neon-dotprod",
            SimdLevel::Neon => "neon",
            SimdLevel::Scalar => "scalar",
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512Vnni => dot_avx512::available(),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => dot_avx2::available(),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::NeonDot => dot_neon::dot_available(),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => dot_neon::available(),
            SimdLevel::Scalar => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest level this CPU has, capped by the environment variable `TESSERA_SIMD`
    /// (`avx512-vnni`, `avx2`, `neon-dotprod`, `neon` or `scalar`) when set. Detected once.
    pub fn detect() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let cap = std::env::var("TESSERA_SIMD").ok();
            let skip = SimdLevel::ALL
                .iter()
                .position(|l| Some(l.name()) == cap.as_deref())
                .unwrap_or(0);
            SimdLevel::ALL[skip..]
                .iter()
                .copied()
                .find(|l| l.is_available())
                .unwrap_or(SimdLevel::Scalar)
        })
    }
}

/// The name of the kernel level in use: "avx512-vnni", "avx2", "neon-dotprod", "neon" or
/// "scalar".
pub fn simd_level() -> &'static str {
    SimdLevel::detect().name()
}
