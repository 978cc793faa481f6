//! Quantized block formats (GGML/GGUF) and their kernels.
//!
//! - [`formats`]: the types ([`QType`]), their ids, block sizes and byte layouts.
//! - [`dequant`]: scalar reference decoding of every format (to integers + scales, and to f32).
//! - [`quantize`]: reference quantizers (for building weights and tests) and the activation
//!   quantizer ([`Acts`]: Q8 blocks of 32 or 256, as llama.cpp quantizes activations).
//! - [`dot_scalar`], `dot_avx512`, `dot_avx2` (x86-64), `dot_neon` (aarch64): one weight row times
//!   activation rows, portable and SIMD; every SIMD kernel is tested against the portable one.
//! - [`interleave`]: the 16-row interleaved layout of Q4_0/Q4_1/Q8_0 for the broadcast kernels.
//! - [`QMatrix`]: a weight matrix kept quantized, with `matmul` (`x W^T`) split over rayon threads.

pub mod dequant;
pub mod dot_scalar;
pub mod formats;
pub mod interleave;
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
pub use qmatrix::{matmul_many, matvec_many, QMatrix};
pub use quantize::{quantize, Acts};

use formats::{QK, QK_K};
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

// The activations' quantizer dispatches to the SIMD modules, which read `Acts`: it lives here,
// above both, so that `quantize` and the `dot_*` modules do not import each other.
impl Acts {
    /// Quantize `x` (n rows of `cols`, `cols` a multiple of `block`) into 32- or 256-blocks.
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize, block: usize) {
        debug_assert!(cols.is_multiple_of(block) && x.len() == n * cols);
        let nb = cols / block;
        self.block = block;
        self.nb = nb;
        self.n = n;
        quantize::resize(&mut self.qs, n * cols, 0);
        quantize::resize(&mut self.d, n * nb, 0.0);
        quantize::resize(&mut self.sum, n * nb, 0);
        if block == QK {
            quantize::resize(&mut self.s, n * nb, 0.0);
            self.bsums.clear();
            let (qs, d, s, sum) = (&mut self.qs, &mut self.d, &mut self.s, &mut self.sum);
            match SimdLevel::detect() {
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx512Vnni => dot_avx512::quantize32(x, qs, d, s, sum),
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 => dot_avx2::quantize32(x, qs, d, s, sum),
                #[cfg(target_arch = "aarch64")]
                SimdLevel::NeonDot | SimdLevel::Neon => dot_neon::quantize32(x, qs, d, s, sum),
                _ => quantize::quantize_blocks32(x, qs, d, s, sum),
            }
        } else {
            self.s.clear();
            quantize::resize(&mut self.bsums, n * nb * 16, 0);
            for (i, (xb, qb)) in x
                .chunks_exact(QK_K)
                .zip(self.qs.chunks_exact_mut(QK_K))
                .enumerate()
            {
                self.d[i] = quantize::quantize_q8k_block(xb, qb);
                let mut total = 0;
                for (g, qg) in qb.chunks_exact(16).enumerate() {
                    let s: i32 = qg.iter().map(|&q| q as i32).sum();
                    self.bsums[i * 16 + g] = s;
                    total += s;
                }
                self.sum[i] = total;
            }
        }
    }

    /// The quantized values of row `j`.
    #[inline]
    pub fn row(&self, j: usize) -> &[i8] {
        let c = self.nb * self.block;
        &self.qs[j * c..(j + 1) * c]
    }
}
