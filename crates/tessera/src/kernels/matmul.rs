//! A thin, strided wrapper over the engine's matrix-multiply crate (`gemm`, AVX-512 / AVX2 / NEON
//! kernels chosen at run time), for the fused kernels that multiply views of their inputs in place
//! (row and column strides in elements) instead of copying them into contiguous tensors first.

use super::Float;

/// A read-only strided matrix view: element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View<T> {
    pub ptr: *const T,
    pub rs: usize,
    pub cs: usize,
}

impl<T> View<T> {
    /// Row-major view of `s` starting at `offset` with row stride `rs`.
    pub fn rows(s: &[T], offset: usize, rs: usize) -> Self {
        View {
            ptr: s[offset..].as_ptr(),
            rs,
            cs: 1,
        }
    }

    /// The transpose of [`View::rows`]: element (i, j) is `s[offset + j·rs + i]`.
    pub fn cols(s: &[T], offset: usize, rs: usize) -> Self {
        View {
            ptr: s[offset..].as_ptr(),
            rs: 1,
            cs: rs,
        }
    }
}

/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_FLOPS: usize = 1 << 18;

/// `dst (m×n) = [dst +] a (m×k) · b (k×n)`; `dst` row-major with row stride `dst_rs`.
/// `parallel` lets the product use the current rayon pool (when it is large enough).
///
/// # Safety
/// Every element the views and `dst` address must lie inside live allocations; `dst` must not
/// overlap `a` or `b` and nothing else may access it meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    a: View<T>,
    b: View<T>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(T::zero());
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 && m * n * k >= PAR_MIN_FLOPS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.ptr,
        a.cs as isize,
        a.rs as isize,
        b.ptr,
        b.cs as isize,
        b.rs as isize,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    );
}

/// A vector of `n` elements written entirely by `fill` through a raw pointer (no zeroing pass
/// first).
///
/// # Safety
/// `fill` must write every one of the `n` elements before returning.
pub(crate) unsafe fn filled<T: Float>(n: usize, fill: impl FnOnce(*mut T)) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    fill(v.as_mut_ptr());
    v.set_len(n);
    v
}

/// A raw pointer that may cross threads: parallel work items write disjoint parts through it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: a `SendPtr` is only an address; every dereference is an `unsafe` block in the kernel
// that uses it, which states why its work item's elements are its own (disjoint writes).
unsafe impl<T> Send for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `SendPtr`, not its field).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: as for `Send`: sharing the address is harmless; the dereferences are checked where made.
unsafe impl<T> Sync for SendPtr<T> {}
