//! Process-wide allocator settings for the tensor workloads (training, fine-tuning, encoders).
//! The program calls this once at start-up (`tessera`'s `main`); the library never changes
//! process state by itself.

/// Make the allocator keep freed memory for reuse (glibc: no `mmap` for buffers under 256 MiB,
/// no trimming below 1 GiB). Every training step frees and reallocates the same activation and
/// gradient buffers, and fresh pages from the kernel cost a page fault each (over a million per
/// `bench train` run without this). Peak memory stays that of one step plus what is kept.
/// Explicit `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` settings win; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        {
            return;
        }
        // SAFETY: `mallopt` (glibc, declared with its C signature above) only changes the
        // allocator's thresholds, takes its own lock, and is documented thread-safe (MT-Safe);
        // the arguments are valid parameter codes and values.
        unsafe {
            if mallopt(M_MMAP_THRESHOLD, 256 << 20) == 0 {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
            }
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
            mallopt(M_TOP_PAD, 64 << 20);
        }
    }
}

/// Send this process's standard output and standard error to `/dev/null` (the ranks other than
/// 0 of a data-parallel job: rank 0 alone reports progress), returning the original standard
/// error, where the program still reports a failure of its own.
#[cfg(unix)]
pub fn silence_output() -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsFd, AsRawFd};
    extern "C" {
        fn dup2(old: i32, new: i32) -> i32;
    }
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
    for fd in [1, 2] {
        // SAFETY: `dup2` (POSIX, declared with its C signature above) atomically makes `fd`
        // refer to the open `/dev/null`; both descriptors are valid for the call, and Rust's
        // stdout/stderr handles keep writing to descriptors 1 and 2, now the null device.
        if unsafe { dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(std::fs::File::from(saved))
}

/// The program's global allocator: the system's, except that zero-filled buffers of 2 MiB or
/// more are fresh anonymous mappings from the kernel (transparent huge pages asked for).
///
/// Why: the tensor engine's backward pass starts every gradient it accumulates from a new
/// zero-filled tensor and adds the op's gradient to it. From the system allocator (which keeps
/// freed memory, [`keep_freed_memory`]) each of those is a `memset` on the calling thread while
/// the other cores wait. A fresh mapping reads as zeros without being written: until its first
/// write the kernel maps its shared zero page (one huge zero page per aligned 2 MiB), so a buffer
/// that is only read and freed costs a fault and an `munmap`, not a pass over its bytes. Buffers
/// that are written anyway cost about what they did (the kernel clears the pages instead of
/// `memset`). The program opts in with `#[global_allocator]`; nothing else changes.
pub struct ZeroMapAlloc;

/// Smallest zeroed buffer taken from the kernel: one huge page (the kernel aligns anonymous
/// mappings of this size or more to it).
const ZERO_MAP_MIN: usize = 2 << 20;

#[cfg(target_os = "linux")]
mod zero_map {
    use std::sync::Mutex;

    /// Start addresses of the live mappings (few at a time: one per large zeroed buffer).
    pub(super) static LIVE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    pub fn map(size: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
        // existing memory; failure is checked.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return std::ptr::null_mut();
            }
            libc::madvise(p, size, libc::MADV_HUGEPAGE);
            // The registry's own allocation goes to the system allocator (plain `alloc`).
            LIVE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(p as usize);
            p as *mut u8
        }
    }

    pub fn is_live(p: *mut u8) -> bool {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(p as usize))
    }

    /// Unmaps `p` if it is one of ours (true), else leaves it (false).
    pub fn unmap(p: *mut u8, size: usize) -> bool {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        match live.iter().position(|&a| a == p as usize) {
            Some(i) => {
                live.swap_remove(i);
                drop(live);
                // SAFETY: `p` is the start of a live mapping of `size` bytes made by `map` (the
                // caller passes the layout it was allocated with), now unreferenced.
                unsafe { libc::munmap(p as *mut libc::c_void, size) };
                true
            }
            None => false,
        }
    }
}

// SAFETY: every request is served by the system allocator or by a fresh mapping of at least the
// requested size, page-aligned (alignment ≤ 4096 required for that path); a pointer is returned to
// whichever made it, told apart by the registry of live mappings.
unsafe impl std::alloc::GlobalAlloc for ZeroMapAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if layout.size() >= ZERO_MAP_MIN && layout.align() <= 4096 {
            let p = zero_map::map(layout.size());
            if !p.is_null() {
                return p;
            }
        }
        std::alloc::System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        #[cfg(target_os = "linux")]
        if layout.size() >= ZERO_MAP_MIN
            && (ptr as usize).is_multiple_of(4096)
            && zero_map::unmap(ptr, layout.size())
        {
            return;
        }
        std::alloc::System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if layout.size() >= ZERO_MAP_MIN
            && (ptr as usize).is_multiple_of(4096)
            && zero_map::is_live(ptr)
        {
            // A mapping of ours moves to the system allocator (rare: tensors do not grow); it
            // stays ours if that fails.
            let q = std::alloc::System.alloc(std::alloc::Layout::from_size_align_unchecked(
                new_size,
                layout.align(),
            ));
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                zero_map::unmap(ptr, layout.size());
            }
            return q;
        }
        std::alloc::System.realloc(ptr, layout, new_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn zero_map_alloc_serves_zeros_and_frees_by_origin() {
        let a = ZeroMapAlloc;
        for size in [100usize, 64 << 10, ZERO_MAP_MIN, 3 * ZERO_MAP_MIN + 12] {
            let l = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: the layout has a non-zero size; every pointer is used within its size and
            // returned with the layout it was made with.
            unsafe {
                let p = a.alloc_zeroed(l);
                assert!(!p.is_null());
                let s = std::slice::from_raw_parts_mut(p, size);
                assert!(s.iter().all(|&b| b == 0), "{size} bytes not zero");
                s[size - 1] = 7;
                s[0] = 3;
                // Growing keeps the contents, from either origin.
                let l2 = Layout::from_size_align(size * 2, 16).unwrap();
                let q = a.realloc(p, l, size * 2);
                assert!(!q.is_null());
                assert_eq!((*q, *q.add(size - 1)), (3, 7));
                a.dealloc(q, l2);
                // Plain allocations still come from the system allocator.
                let r = a.alloc(l);
                assert!(!r.is_null());
                r.write_bytes(1, size);
                a.dealloc(r, l);
            }
        }
        #[cfg(target_os = "linux")]
        assert!(
            zero_map::LIVE.lock().unwrap().is_empty(),
            "a mapping leaked"
        );
    }
}
