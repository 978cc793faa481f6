//! Fused CPU kernels with their backward passes, used by the layers when the tensors are on the CPU
//! in f32 or f64. Each has a plain reference (the composition of engine ops in `nn/`) beside it, and
//! tests check the two agree and that the backward matches finite differences.
//!
//! Every kernel works on contiguous row-major data, one row per parallel work item.

pub mod activation;
pub mod cache_attention;
pub mod causal_attention;
pub mod cross_entropy;
pub mod encoder_attention;
pub mod erf;
pub mod fast_exp;
pub mod gelu;
pub mod gelu_erf;
pub mod linear;
pub(crate) mod matmul;
pub mod norm;
pub mod quant;
pub mod rotary;
pub mod segment;
pub mod softmax;
pub(crate) mod unary;

use candle_core::{CpuStorage, Layout, Result, Tensor, WithDType};

/// Float types the kernels are written for.
pub trait Float:
    WithDType + num_traits::Float + num_traits::NumAssign + Send + Sync + std::iter::Sum
{
    /// `e^x` for inner loops: exact for f64; for f32 within 2 ulp and vectorizable
    /// ([`fast_exp::exp_f32`]).
    fn vexp(self) -> Self;
}
impl Float for f32 {
    #[inline(always)]
    fn vexp(self) -> f32 {
        fast_exp::exp_f32(self)
    }
}
impl Float for f64 {
    #[inline(always)]
    fn vexp(self) -> f64 {
        self.exp()
    }
}

/// Whether the element-wise loops may run their AVX-512 builds: x86-64 CPUs with every feature
/// those builds enable (`#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]`;
/// checked once, cached by the standard library). Every AVX-512 CPU has AVX2 and FMA, but a
/// virtual machine may mask them, and calling a function built for a feature the CPU lacks is
/// undefined behaviour. The default build targets baseline x86-64
/// (SSE2, 4 lanes), so the hot loops get a second build with `#[target_feature]` and pick it here.
/// Both builds do the same IEEE operations in the same order (Rust never contracts a·b + c
/// into an FMA by itself), so their results are bit-identical.
#[inline]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // callers are x86-only
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The contiguous data of a kernel input.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kernel input must be contiguous".into()))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

/// Whether the fused kernels apply to `t` (CPU, f32 or f64).
pub fn applicable(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// Run `f` over rows of length `row` of `out`, in parallel when the work is large enough.
pub(crate) fn par_rows<T: Send, F: Fn(usize, &mut [T]) + Sync + Send>(
    out: &mut [T],
    row: usize,
    f: F,
) {
    use rayon::prelude::*;
    if row == 0 {
        return;
    }
    if out.len() >= 1 << 15 {
        out.par_chunks_mut(row)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    } else {
        out.chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// A new buffer of `len` elements, written row by row by `f(i, row)` (rows of `row` elements,
/// the last one shorter when `row` does not divide `len`), rows in parallel as [`par_rows`].
/// Each row is zeroed just before `f` writes it, in the same work item, instead of a zeroing
/// pass over the whole buffer first: the zeros cost nothing on top of the write that follows
/// (the lines are in cache) and the buffer's pages are first touched on the thread that fills
/// them.
pub(crate) fn new_rows<T: Float, F: Fn(usize, &mut [T]) + Sync + Send>(
    len: usize,
    row: usize,
    f: F,
) -> Vec<T> {
    new_rows_in(len, len, row, f)
}

/// [`new_rows`] for the first `len` elements of a buffer of `total` (≥ `len`), the rest zeros.
pub(crate) fn new_rows_in<T: Float, F: Fn(usize, &mut [T]) + Sync + Send>(
    total: usize,
    len: usize,
    row: usize,
    f: F,
) -> Vec<T> {
    use std::mem::MaybeUninit;
    assert!(len <= total);
    if row == 0 {
        return vec![T::zero(); total];
    }
    let mut v: Vec<T> = Vec::with_capacity(total);
    v.spare_capacity_mut()[len..total].fill(MaybeUninit::new(T::zero()));
    par_rows(&mut v.spare_capacity_mut()[..len], row, |i, r| {
        r.fill(MaybeUninit::new(T::zero()));
        // SAFETY: every element of `r` was just initialized, and `MaybeUninit<T>` has `T`'s layout.
        f(i, unsafe { &mut *(r as *mut [MaybeUninit<T>] as *mut [T]) })
    });
    // SAFETY: the chunks cover the first `len` elements and each was initialized above; the
    // rest were zeroed first.
    unsafe { v.set_len(total) };
    v
}

/// Dispatch on the float dtype of a storage.
macro_rules! float_dispatch {
    ($s:expr, $name:expr, |$t:ident| $body:expr) => {
        match $s {
            candle_core::CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => Err(candle_core::Error::Msg(format!(
                "{}: only f32 and f64 are supported",
                $name
            ))),
        }
    };
}
pub(crate) use float_dispatch;

#[cfg(test)]
mod tests {
    #[test]
    fn new_rows_writes_every_row_and_zeroes_the_tail() {
        for (total, len, row) in [(10, 10, 3), (70_000, 65_536, 256), (5, 0, 4), (8, 8, 8)] {
            let v: Vec<f32> = super::new_rows_in(total, len, row, |i, r| {
                assert!(r.iter().all(|&x| x == 0.0), "row {i} not zeroed before f");
                for (j, x) in r.iter_mut().enumerate() {
                    *x = (i * row + j) as f32 + 1.0;
                }
            });
            assert_eq!(v.len(), total);
            for (k, &x) in v.iter().enumerate() {
                let want = if k < len { k as f32 + 1.0 } else { 0.0 };
                assert_eq!(x, want, "element {k} of ({total}, {len}, {row})");
            }
        }
        let v: Vec<f64> = super::new_rows(6, 0, |_, _| unreachable!());
        assert_eq!(v, vec![0.0; 6]);
    }
}
