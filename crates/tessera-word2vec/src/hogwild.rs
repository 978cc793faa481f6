//! The parameter matrices of SGNS, read and written by all threads at once without locks.
//!
//! Hogwild! lets two threads update the same row at the same time; an update can then be lost
//! or mixed, which SGD tolerates. Plain `&mut [f32]` rows (or raw-pointer reads and writes)
//! from several threads at once would be a data race, which is undefined behaviour in Rust
//! whatever the hardware does. So each element is an [`AtomicU32`] holding an `f32`'s bits, and
//! every access is a `Relaxed` atomic load or store, which on x86-64 and aarch64 is an ordinary
//! move.
//!
//! The three row operations of the training loop (a dot product, the fused output-row update and
//! the input-row update) exist twice:
//! - portable: one relaxed atomic access per element, in Rust (the compiler does not vectorize
//!   atomic accesses, so this is slower);
//! - x86-64 with AVX2, and aarch64 (NEON): the same arithmetic in inline assembly, 8 floats per
//!   step, operating on the shared rows in place. A vector load or store of 4-byte-aligned `f32`s
//!   never splits an element (x86: accesses to an aligned doubleword are single-copy atomic;
//!   Arm: each element of an `ld1`/`st1` is a single-copy-atomic access of its size), so each
//!   block behaves exactly as the relaxed per-element atomic accesses of the portable version,
//!   which is what Rust's rules for inline assembly ask (the block must do only what Rust code
//!   could do in its place).
//!
//! Both versions do the same IEEE operations in the same order (16 independent partial sums in
//! the dot product, no fused multiply-add), so results do not depend on which one runs, and one
//! thread gives the same vectors as plain slices would.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use tessera::{Error, Result};

/// A (rows, dim) `f32` matrix shared by the Hogwild! threads (see the module documentation).
pub(super) struct SharedMatrix {
    cells: Vec<AtomicU32>,
    dim: usize,
}

impl SharedMatrix {
    /// `rows × dim` values from `init` (row-major), or an error when they do not fit in memory.
    pub(super) fn new(rows: usize, dim: usize, mut init: impl FnMut() -> f32) -> Result<Self> {
        let n = rows
            .checked_mul(dim)
            .filter(|n| *n <= isize::MAX as usize / 8)
            .ok_or_else(|| {
                Error::Config(format!("{rows} words × {dim} dimensions is too large"))
            })?;
        let mut cells: Vec<AtomicU32> = Vec::new();
        cells.try_reserve_exact(n).map_err(|_| {
            Error::Config(format!(
                "cannot allocate a {rows} words × {dim} dimensions matrix"
            ))
        })?;
        cells.extend((0..n).map(|_| AtomicU32::new(init().to_bits())));
        Ok(SharedMatrix { cells, dim })
    }

    /// Row `r`.
    #[inline(always)]
    pub(super) fn row(&self, r: usize) -> &[AtomicU32] {
        &self.cells[r * self.dim..(r + 1) * self.dim]
    }

    /// The matrix as plain row-major values (a snapshot).
    pub(super) fn to_vec(&self) -> Vec<f32> {
        self.cells.iter().map(load).collect()
    }
}

#[inline(always)]
fn load(a: &AtomicU32) -> f32 {
    f32::from_bits(a.load(Relaxed))
}

#[inline(always)]
fn store(a: &AtomicU32, v: f32) {
    a.store(v.to_bits(), Relaxed)
}

/// The row operations, portable or in vector assembly (chosen once per worker; see the module
/// documentation).
#[derive(Clone, Copy, Debug)]
pub(super) enum Kernels {
    Portable,
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    Avx2,
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    Neon,
}

impl Kernels {
    /// The fastest version this CPU runs.
    pub(super) fn detect() -> Kernels {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernels::Avx2;
        }
        #[cfg(all(target_arch = "aarch64", not(miri)))]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Kernels::Neon;
        }
        Kernels::Portable
    }

    /// `a · b` with 16 independent partial sums: the sums of
    /// [`objective::dot`](super::objective::dot), reading the shared rows atomically.
    #[inline(always)]
    pub(super) fn dot(self, a: &[AtomicU32], b: &[AtomicU32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 16];
        let body = n - n % 16;
        match self {
            Kernels::Portable => {
                for (x, y) in a[..body].chunks_exact(16).zip(b[..body].chunks_exact(16)) {
                    for j in 0..16 {
                        acc[j] += load(&x[j]) * load(&y[j]);
                    }
                }
            }
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: `detect` found AVX2; both rows hold `body` elements; see `avx2::dot16`.
            Kernels::Avx2 => unsafe { avx2::dot16(a.as_ptr(), b.as_ptr(), body / 16, &mut acc) },
            #[cfg(all(target_arch = "aarch64", not(miri)))]
            // SAFETY: `detect` found NEON; both rows hold `body` elements; see `neon::dot16`.
            Kernels::Neon => unsafe { neon::dot16(a.as_ptr(), b.as_ptr(), body / 16, &mut acc) },
        }
        let mut tail = 0.0;
        for (x, y) in a[body..].iter().zip(&b[body..]) {
            tail += load(x) * load(y);
        }
        let mut s8 = [0.0f32; 8];
        for j in 0..8 {
            s8[j] = acc[j] + acc[j + 8];
        }
        ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7])) + tail
    }

    /// The fused output-row update of one target: `e += g · u; u += g · x` element-wise
    /// (`u`: the target's output row, `x`: the context's input row, `e`: the thread's
    /// input-gradient buffer).
    #[inline(always)]
    pub(super) fn update(self, e: &mut [f32], u: &[AtomicU32], x: &[AtomicU32], g: f32) {
        let n = e.len().min(u.len()).min(x.len());
        let body = match self {
            Kernels::Portable => 0,
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Kernels::Avx2 => {
                let body = n - n % 8;
                // SAFETY: `detect` found AVX2; all three hold at least `body` elements, and `e`
                // (the thread's own buffer) overlaps neither shared row; see `avx2::update8`.
                unsafe { avx2::update8(e.as_mut_ptr(), u.as_ptr(), x.as_ptr(), body / 8, g) };
                body
            }
            #[cfg(all(target_arch = "aarch64", not(miri)))]
            Kernels::Neon => {
                let body = n - n % 8;
                // SAFETY: as for AVX2, with NEON; see `neon::update8`.
                unsafe { neon::update8(e.as_mut_ptr(), u.as_ptr(), x.as_ptr(), body / 8, g) };
                body
            }
        };
        for ((e, u), x) in e[body..n].iter_mut().zip(&u[body..n]).zip(&x[body..n]) {
            let uv = load(u);
            *e += g * uv;
            store(u, uv + g * load(x));
        }
    }

    /// `row += e` element-wise, reading `row` afresh (updates other threads made meanwhile stay).
    #[inline(always)]
    pub(super) fn add(self, row: &[AtomicU32], e: &[f32]) {
        let n = row.len().min(e.len());
        let body = match self {
            Kernels::Portable => 0,
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Kernels::Avx2 => {
                let body = n - n % 8;
                // SAFETY: `detect` found AVX2; both hold at least `body` elements; see `avx2::add8`.
                unsafe { avx2::add8(row.as_ptr(), e.as_ptr(), body / 8) };
                body
            }
            #[cfg(all(target_arch = "aarch64", not(miri)))]
            Kernels::Neon => {
                let body = n - n % 8;
                // SAFETY: `detect` found NEON; both hold at least `body` elements; see `neon::add8`.
                unsafe { neon::add8(row.as_ptr(), e.as_ptr(), body / 8) };
                body
            }
        };
        for (r, &e) in row[body..n].iter().zip(&e[body..n]) {
            store(r, load(r) + e);
        }
    }
}

/// The vector versions. Each reads and writes shared cells only with `vmovups` of 8 aligned
/// `f32`s (one single-copy-atomic access per element, as relaxed atomic accesses would be), and
/// the thread's own buffers freely.
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod avx2 {
    use std::arch::asm;
    use std::sync::atomic::AtomicU32;

    /// `acc[j] += a[16i + j] · b[16i + j]` for `i < chunks`, `j < 16`.
    ///
    /// # Safety
    /// The CPU has AVX2; `a` and `b` point to at least `16 · chunks` cells.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn dot16(
        a: *const AtomicU32,
        b: *const AtomicU32,
        chunks: usize,
        acc: &mut [f32; 16],
    ) {
        if chunks == 0 {
            return;
        }
        // SAFETY: the caller's contract; `acc` is 16 floats of our own.
        unsafe {
            asm!(
                "vmovups {s0}, [{acc}]",
                "vmovups {s1}, [{acc} + 32]",
                "2:",
                "vmovups {x0}, [{a}]",
                "vmovups {x1}, [{a} + 32]",
                "vmovups {y0}, [{b}]",
                "vmovups {y1}, [{b} + 32]",
                "vmulps {x0}, {x0}, {y0}",
                "vmulps {x1}, {x1}, {y1}",
                "vaddps {s0}, {s0}, {x0}",
                "vaddps {s1}, {s1}, {x1}",
                "add {a}, 64",
                "add {b}, 64",
                "dec {n}",
                "jnz 2b",
                "vmovups [{acc}], {s0}",
                "vmovups [{acc} + 32], {s1}",
                acc = in(reg) acc.as_mut_ptr(),
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                n = inout(reg) chunks => _,
                s0 = out(ymm_reg) _,
                s1 = out(ymm_reg) _,
                x0 = out(ymm_reg) _,
                x1 = out(ymm_reg) _,
                y0 = out(ymm_reg) _,
                y1 = out(ymm_reg) _,
                options(nostack),
            );
        }
    }

    /// `e[i] += g · u[i]; u[i] += g · x[i]` for `i < 8 · chunks` (`u` read once per element).
    ///
    /// # Safety
    /// The CPU has AVX2; all three point to at least `8 · chunks` elements; `e` is not shared.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn update8(
        e: *mut f32,
        u: *const AtomicU32,
        x: *const AtomicU32,
        chunks: usize,
        g: f32,
    ) {
        if chunks == 0 {
            return;
        }
        // SAFETY: the caller's contract. `u` is written through the cells' interior mutability.
        unsafe {
            asm!(
                "vbroadcastss {gv}, {g}",
                "2:",
                "vmovups {uv}, [{u}]",
                "vmulps {t}, {gv}, {uv}",
                "vaddps {t}, {t}, [{e}]",
                "vmovups [{e}], {t}",
                "vmovups {t}, [{x}]",
                "vmulps {t}, {gv}, {t}",
                "vaddps {uv}, {uv}, {t}",
                "vmovups [{u}], {uv}",
                "add {u}, 32",
                "add {x}, 32",
                "add {e}, 32",
                "dec {n}",
                "jnz 2b",
                g = in(xmm_reg) g,
                e = inout(reg) e => _,
                u = inout(reg) u => _,
                x = inout(reg) x => _,
                n = inout(reg) chunks => _,
                gv = out(ymm_reg) _,
                uv = out(ymm_reg) _,
                t = out(ymm_reg) _,
                options(nostack),
            );
        }
    }

    /// `row[i] += e[i]` for `i < 8 · chunks`.
    ///
    /// # Safety
    /// The CPU has AVX2; both point to at least `8 · chunks` elements.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn add8(row: *const AtomicU32, e: *const f32, chunks: usize) {
        if chunks == 0 {
            return;
        }
        // SAFETY: the caller's contract. `row` is written through the cells' interior mutability.
        unsafe {
            asm!(
                "2:",
                "vmovups {r}, [{row}]",
                "vaddps {r}, {r}, [{e}]",
                "vmovups [{row}], {r}",
                "add {row}, 32",
                "add {e}, 32",
                "dec {n}",
                "jnz 2b",
                row = inout(reg) row => _,
                e = inout(reg) e => _,
                n = inout(reg) chunks => _,
                r = out(ymm_reg) _,
                options(nostack),
            );
        }
    }
}

/// The NEON versions, as the AVX2 ones: shared cells only through `ld1`/`st1` of `.4s` elements
/// (each element one single-copy-atomic access), separate multiply and add (no fused `fmla`, so
/// the results equal the portable arithmetic bit for bit).
#[cfg(all(target_arch = "aarch64", not(miri)))]
mod neon {
    use std::arch::asm;
    use std::sync::atomic::AtomicU32;

    /// `acc[j] += a[16i + j] · b[16i + j]` for `i < chunks`, `j < 16`.
    ///
    /// # Safety
    /// The CPU has NEON; `a` and `b` point to at least `16 · chunks` cells.
    #[target_feature(enable = "neon")]
    #[inline]
    pub(super) unsafe fn dot16(
        a: *const AtomicU32,
        b: *const AtomicU32,
        chunks: usize,
        acc: &mut [f32; 16],
    ) {
        if chunks == 0 {
            return;
        }
        // SAFETY: the caller's contract; `acc` is 16 floats of our own.
        unsafe {
            asm!(
                "ld1 {{v0.4s, v1.4s, v2.4s, v3.4s}}, [{acc}]",
                "2:",
                "ld1 {{v4.4s, v5.4s, v6.4s, v7.4s}}, [{a}], #64",
                "ld1 {{v16.4s, v17.4s, v18.4s, v19.4s}}, [{b}], #64",
                "fmul v4.4s, v4.4s, v16.4s",
                "fmul v5.4s, v5.4s, v17.4s",
                "fmul v6.4s, v6.4s, v18.4s",
                "fmul v7.4s, v7.4s, v19.4s",
                "fadd v0.4s, v0.4s, v4.4s",
                "fadd v1.4s, v1.4s, v5.4s",
                "fadd v2.4s, v2.4s, v6.4s",
                "fadd v3.4s, v3.4s, v7.4s",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                "st1 {{v0.4s, v1.4s, v2.4s, v3.4s}}, [{acc}]",
                acc = in(reg) acc.as_mut_ptr(),
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                n = inout(reg) chunks => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                options(nostack),
            );
        }
    }

    /// `e[i] += g · u[i]; u[i] += g · x[i]` for `i < 8 · chunks` (`u` read once per element).
    ///
    /// # Safety
    /// The CPU has NEON; all three point to at least `8 · chunks` elements; `e` is not shared.
    #[target_feature(enable = "neon")]
    #[inline]
    pub(super) unsafe fn update8(
        e: *mut f32,
        u: *const AtomicU32,
        x: *const AtomicU32,
        chunks: usize,
        g: f32,
    ) {
        if chunks == 0 {
            return;
        }
        // SAFETY: the caller's contract. `u` is written through the cells' interior mutability.
        unsafe {
            asm!(
                "dup v16.4s, {g:v}.s[0]",
                "2:",
                "ld1 {{v0.4s, v1.4s}}, [{u}]",
                "ld1 {{v2.4s, v3.4s}}, [{e}]",
                "fmul v4.4s, v16.4s, v0.4s",
                "fmul v5.4s, v16.4s, v1.4s",
                "fadd v2.4s, v2.4s, v4.4s",
                "fadd v3.4s, v3.4s, v5.4s",
                "st1 {{v2.4s, v3.4s}}, [{e}], #32",
                "ld1 {{v4.4s, v5.4s}}, [{x}], #32",
                "fmul v4.4s, v16.4s, v4.4s",
                "fmul v5.4s, v16.4s, v5.4s",
                "fadd v0.4s, v0.4s, v4.4s",
                "fadd v1.4s, v1.4s, v5.4s",
                "st1 {{v0.4s, v1.4s}}, [{u}], #32",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                g = in(vreg) g,
                e = inout(reg) e => _,
                u = inout(reg) u => _,
                x = inout(reg) x => _,
                n = inout(reg) chunks => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v16") _,
                options(nostack),
            );
        }
    }

    /// `row[i] += e[i]` for `i < 8 · chunks`.
    ///
    /// # Safety
    /// The CPU has NEON; both point to at least `8 · chunks` elements.
    #[target_feature(enable = "neon")]
    #[inline]
    pub(super) unsafe fn add8(row: *const AtomicU32, e: *const f32, chunks: usize) {
        if chunks == 0 {
            return;
        }
        // SAFETY: the caller's contract. `row` is written through the cells' interior mutability.
        unsafe {
            asm!(
                "2:",
                "ld1 {{v0.4s, v1.4s}}, [{row}]",
                "ld1 {{v2.4s, v3.4s}}, [{e}], #32",
                "fadd v0.4s, v0.4s, v2.4s",
                "fadd v1.4s, v1.4s, v3.4s",
                "st1 {{v0.4s, v1.4s}}, [{row}], #32",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                row = inout(reg) row => _,
                e = inout(reg) e => _,
                n = inout(reg) chunks => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                options(nostack),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[f32]) -> Vec<AtomicU32> {
        v.iter().map(|x| AtomicU32::new(x.to_bits())).collect()
    }

    fn values(c: &[AtomicU32]) -> Vec<f32> {
        c.iter().map(load).collect()
    }

    fn all_kernels() -> Vec<Kernels> {
        let mut k = vec![Kernels::Portable];
        if !matches!(Kernels::detect(), Kernels::Portable) {
            k.push(Kernels::detect());
        }
        k
    }

    #[test]
    fn kernels_equal_the_plain_arithmetic_bit_for_bit() {
        for n in [1, 7, 8, 15, 16, 17, 100, 300] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let e0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05).sin() * 0.1).collect();
            let g = 0.0173f32;
            // Plain slices: the training loop's arithmetic before the shared cells.
            let want_dot = crate::objective::dot(&a, &b);
            let mut want_e = e0.clone();
            let mut want_u = b.clone();
            for ((e, u), &x) in want_e.iter_mut().zip(want_u.iter_mut()).zip(&a) {
                *e += g * *u;
                *u += g * x;
            }
            let want_add: Vec<f32> = a.iter().zip(&want_e).map(|(x, e)| x + e).collect();
            for k in all_kernels() {
                let (ca, cb) = (cells(&a), cells(&b));
                assert_eq!(k.dot(&ca, &cb).to_bits(), want_dot.to_bits(), "{k:?} n={n}");
                let mut e = e0.clone();
                k.update(&mut e, &cb, &ca, g);
                assert_eq!(e, want_e, "{k:?} n={n}");
                assert_eq!(values(&cb), want_u, "{k:?} n={n}");
                k.add(&ca, &e);
                assert_eq!(values(&ca), want_add, "{k:?} n={n}");
            }
        }
    }

    #[test]
    fn matrix_round_trips() {
        let mut i = 0.0f32;
        let m = SharedMatrix::new(3, 5, || {
            i += 1.0;
            i
        })
        .unwrap();
        let want: Vec<f32> = (1..=15).map(|x| x as f32).collect();
        assert_eq!(m.to_vec(), want);
        assert_eq!(values(m.row(1)), want[5..10]);
        assert!(SharedMatrix::new(usize::MAX / 2, 4, || 0.0).is_err());
    }

    #[test]
    fn hogwild_threads_update_the_same_rows() {
        // Threads adding to the same rows at once: values stay whole numbers in range (updates
        // may be lost, never torn), and the run has no data race (Miri checks this test).
        let m = SharedMatrix::new(2, 20, || 0.0).unwrap();
        let (threads, rounds) = if cfg!(miri) { (3, 10) } else { (8, 2000) };
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let k = Kernels::detect();
                    let ones = vec![1.0f32; 20];
                    let mut e = vec![0.0f32; 20];
                    for _ in 0..rounds {
                        k.add(m.row(0), &ones);
                        k.update(&mut e, m.row(1), m.row(0), 0.0);
                    }
                });
            }
        });
        let v = m.to_vec();
        let max = (threads * rounds) as f32;
        assert!(v[..20]
            .iter()
            .all(|&x| (1.0..=max).contains(&x) && x.fract() == 0.0));
        assert!(v[20..].iter().all(|&x| x == 0.0));
    }
}
