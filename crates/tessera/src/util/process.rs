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
