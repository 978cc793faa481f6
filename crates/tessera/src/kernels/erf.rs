//! erf for the element-wise kernels (exact GELU and its derivative).

use super::Float;

/// erf in the float's own precision: f64 exact (libm), f32 a rational minimax approximation on
/// [-4, 4] (erf is ±1 in f32 beyond), within 5e-7 of the exact value and branch-free, so the loops
/// vectorize.
pub trait Erf: Float {
    fn erf(self) -> Self;
}
impl Erf for f32 {
    #[inline(always)]
    fn erf(self) -> f32 {
        let x = self.clamp(-4.0, 4.0);
        let x2 = x * x;
        let mut p = -2.726_142_3e-10_f32;
        for c in [
            2.770_681_4e-8,
            -2.101_024e-6,
            -5.692_506_4e-5,
            -7.349_906_3e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ] {
            p = p * x2 + c;
        }
        let mut q = -1.456_607_2e-5_f32;
        for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
            q = q * x2 + c;
        }
        x * p / q
    }
}
impl Erf for f64 {
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}
