//! Fallible allocation of buffers whose size comes from outside: a model file's context length, a
//! config's dimensions. Running out of memory there is an error naming the buffer, not an abort.

use crate::{Error, Result};

mod sealed {
    pub trait Sealed {}
}

/// Element types whose all-zero bit pattern is a valid value.
pub trait Zeroable: Copy + sealed::Sealed {}
macro_rules! zeroable {
    ($($t:ty),*) => {$(impl sealed::Sealed for $t {} impl Zeroable for $t {})*};
}
zeroable!(u8, u16, u32, u64, i8, i32, f32, f64);

fn no_memory(what: &str, n: usize, size: usize) -> Error {
    Error::Input(format!(
        "cannot allocate the {what} ({n} elements, {:.1} GiB): not enough memory",
        n as f64 * size as f64 / (1u64 << 30) as f64
    ))
}

/// `n` zeros. Taken from the allocator's zeroed path, so a large buffer's pages come fresh from
/// the OS and cost memory only once written (a KV cache sized for a whole context costs what is
/// used of it).
pub fn zeroed<T: Zeroable>(n: usize, what: &str) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| no_memory(what, n, size))?;
    // SAFETY: the layout's size is non-zero (n > 0 and every `Zeroable` type has a non-zero size).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        return Err(no_memory(what, n, size));
    }
    // SAFETY: `p` comes from the global allocator with the layout of `[T; n]`, which is the
    // layout a `Vec<T>` of capacity `n` uses; all `n` elements are initialised, since all-zero
    // bytes are a valid `T` (the `Zeroable` contract, sealed to the primitive types above).
    Ok(unsafe { Vec::from_raw_parts(p, n, n) })
}

/// `n` copies of `value`.
pub fn filled<T: Copy>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| no_memory(what, n, std::mem::size_of::<T>()))?;
    v.resize(n, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_and_refusals() {
        let v: Vec<f32> = zeroed(1000, "test").unwrap();
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(zeroed::<u16>(0, "test").unwrap().is_empty());
        let e = zeroed::<u16>(usize::MAX / 2, "KV cache")
            .unwrap_err()
            .to_string();
        assert!(e.contains("KV cache"), "{e}");
        assert!(zeroed::<u64>(1 << 60, "x").is_err());
        assert!(filled(1 << 61, 1.0f32, "table").is_err());
        assert_eq!(filled(3, 7u8, "t").unwrap(), vec![7, 7, 7]);
    }
}
