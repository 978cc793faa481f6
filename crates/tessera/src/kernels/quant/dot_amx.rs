//! AMX int8 tiles (Intel Sapphire Rapids and later) for products of interleaved weights
//! (`interleave`: Q4_0, Q4_1, Q8_0) with several activation rows: the batched decode step of
//! `tessera serve` and short prompts.
//!
//! Per group of 16 weight rows and 32-block: the block's weights are one 8 x 64-byte B tile in
//! the VNNI order the interleaved layout already has (row r: elements 4r..4r + 4 of each of the
//! 16 weight rows; Q8_0's chunks are loaded straight from the matrix, Q4's nibbles are split into
//! a 512-byte scratch), the activation rows' quants of that block one A tile (M rows x 32 bytes,
//! read in place with the stride of a row of blocks), and `tdpbsud` gives the M x 16 exact
//! integer sums in one instruction. Those are the very integers the AVX-512 broadcast kernel
//! (`dot_avx512::rows_x16`) sums with 8 `vpdpbusd` per row, and they are scaled with the same
//! operations in the same order, so both kernels give bit-identical results (tested).
//!
//! Linux hands out the tile registers only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), once
//! per process; [`available`] makes the request and says whether it was granted. The
//! instructions are written with `asm!` (the AMX intrinsics are not stable Rust); each kernel
//! call loads its tile configuration and releases the tiles when it returns.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::formats::{QType, QK};
use super::quantize::Acts;

/// Whether this CPU and OS run the AMX kernel (AMX-TILE and AMX-INT8 in CPUID, the AVX-512
/// kernels available, and the kernel's permission to use the tile data granted).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // CPUID leaf 7 exists on every x86-64 CPU with AVX-512 (checked first).
        let leaf7 = super::dot_avx512::available().then(|| __cpuid_count(7, 0));
        let cpu = leaf7.is_some_and(|c| (c.edx >> 24) & 1 == 1 && (c.edx >> 25) & 1 == 1);
        cpu && request_tile_permission()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true if Linux granted this process the
/// AMX tile state.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with these arguments only changes which extended
    // register states the process may use; it reads and writes no memory of ours. `syscall`
    // clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// A tile configuration (palette 1): two sets of tmm0/tmm3 = C (m x 16 i32), tmm1/tmm4 = A
/// (m x 32 i8), tmm2/tmm5 = B (8 x 64 u8).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(m: usize) -> Self {
        let mut b = [0u8; 64];
        b[0] = 1;
        let mut set = |t: usize, rows: usize, colsb: u16| {
            b[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb.to_le_bytes());
            b[48 + t] = rows as u8;
        };
        for base in [0, 3] {
            set(base, m, 64);
            set(base + 1, m, 32);
            set(base + 2, 8, 64);
        }
        TileConfig(b)
    }
}

/// `out[i * ldo + k] = w_i · x_{j0 + k}`, as `dot_avx512::rows_x16` (same arguments, same
/// results bit for bit); one activation row goes to that kernel, several to the tiles.
///
/// Panics if the sizes do not fit or [`available`] is false.
#[allow(clippy::too_many_arguments)]
pub fn rows_x16(
    t: QType,
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    g: usize,
    out: &mut [f32],
    ldo: usize,
) {
    if g < 2 {
        return super::dot_avx512::rows_x16(t, w, nrows, acts, j0, g, out, ldo);
    }
    assert!(available(), "AMX kernel called without AMX");
    assert_eq!(acts.block, QK);
    assert!(nrows.is_multiple_of(16));
    assert_eq!(w.len(), nrows * acts.nb * t.block_bytes());
    assert!(j0 + g <= acts.n);
    assert!(nrows == 0 || out.len() >= (nrows - 1) * ldo + g);
    assert!(acts.qs.len() >= acts.n * acts.nb * QK && acts.d.len() >= acts.n * acts.nb);
    assert!(acts.s.len() >= acts.n * acts.nb && acts.sum.len() >= acts.n * acts.nb);
    let kind = match t {
        QType::Q4_0 => 0,
        QType::Q4_1 => 1,
        QType::Q8_0 => 2,
        _ => panic!("dot_amx::rows_x16: {t} has no interleaved layout"),
    };
    let mut k = 0;
    while k < g {
        let m = [1, 2, 2, 4, 4, 4, 4, 8][(g - k).min(8) - 1];
        let o = out[k..].as_mut_ptr();
        // SAFETY: AMX and AVX-512 were checked (`available`); `w` holds `nrows / 16` groups of
        // `nb` packed blocks, the activation rows j0 + k .. j0 + k + m exist, and `out` holds
        // every index written (all asserted above).
        unsafe {
            match (kind, m) {
                (0, 8) => tiles::<0, 8>(w, nrows, acts, j0 + k, o, ldo),
                (0, 4) => tiles::<0, 4>(w, nrows, acts, j0 + k, o, ldo),
                (0, 2) => tiles::<0, 2>(w, nrows, acts, j0 + k, o, ldo),
                (0, _) => tiles::<0, 1>(w, nrows, acts, j0 + k, o, ldo),
                (1, 8) => tiles::<1, 8>(w, nrows, acts, j0 + k, o, ldo),
                (1, 4) => tiles::<1, 4>(w, nrows, acts, j0 + k, o, ldo),
                (1, 2) => tiles::<1, 2>(w, nrows, acts, j0 + k, o, ldo),
                (1, _) => tiles::<1, 1>(w, nrows, acts, j0 + k, o, ldo),
                (_, 8) => tiles::<2, 8>(w, nrows, acts, j0 + k, o, ldo),
                (_, 4) => tiles::<2, 4>(w, nrows, acts, j0 + k, o, ldo),
                (_, 2) => tiles::<2, 2>(w, nrows, acts, j0 + k, o, ldo),
                (_, _) => tiles::<2, 1>(w, nrows, acts, j0 + k, o, ldo),
            }
        }
        k += m;
    }
}

/// The tile products of `M` (1, 2, 4 or 8) activation rows from `j0` with every group of `w`
/// (KIND 0: Q4_0, 1: Q4_1, 2: Q8_0), writing `o[i * ldo + r]`.
///
/// # Safety
/// As [`rows_x16`] asserts, for rows `j0..j0 + M`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tiles<const KIND: u8, const M: usize>(
    w: &[u8],
    nrows: usize,
    acts: &Acts,
    j0: usize,
    o: *mut f32,
    ldo: usize,
) {
    let t = [QType::Q4_0, QType::Q4_1, QType::Q8_0][KIND as usize];
    let bb = 16 * t.block_bytes();
    let qo = if KIND == 1 { 64 } else { 32 };
    let nb = acts.nb;
    let cfg = TileConfig::new(M);
    // The B tile of a Q4 block (nibbles split), and the C tile stored for the scaling.
    #[repr(C, align(64))]
    struct Scratch([u8; 1024], [i32; 2 * 8 * 16]);
    let mut sc = Scratch([0; 1024], [0; 2 * 8 * 16]);
    let (ps, pd, pm) = (acts.sum.as_ptr(), acts.d.as_ptr(), acts.s.as_ptr());
    let low = _mm512_set1_epi8(0x0f);
    let a_stride = nb * QK;
    // SAFETY (tile instructions below): the configuration is valid for palette 1 (M <= 8 rows
    // of at most 64 bytes); every tile load reads M rows of 32 bytes from row j0's block b at
    // the stride of a row of blocks (inside `acts.qs`), or 8 rows of 64 bytes from the B
    // scratch or the packed block (inside `w`); the store writes M rows of 64 bytes into the C
    // scratch. The tiles are released before returning.
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    for gi in 0..nrows / 16 {
        let wg = w.as_ptr().add(gi * 16 * nb * t.block_bytes());
        let og = o.add(gi * 16 * ldo);
        let mut acc = [_mm512_setzero_ps(); M];
        // Two blocks per step in separate tiles (tmm0-2 and tmm3-5), so their products overlap.
        let mut b = 0;
        while b < nb {
            let two = b + 1 < nb;
            let p = wg.add(b * bb);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * bb) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * bb + 64) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * bb + 128) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * bb + 192) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * bb + 256) as *const i8);
            let btile = |k: usize, sc: &mut [u8; 1024]| -> *const u8 {
                let p = p.add(k * bb);
                if KIND == 2 {
                    return p.add(qo);
                }
                let dst = sc.as_mut_ptr().add(512 * k);
                for c in 0..4 {
                    let x = _mm512_loadu_si512(p.add(qo + 64 * c) as *const __m512i);
                    let lo = _mm512_and_si512(x, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
                    _mm512_store_si512(dst.add(64 * c) as *mut __m512i, lo);
                    _mm512_store_si512(dst.add(64 * (c + 4)) as *mut __m512i, hi);
                }
                dst
            };
            let b0 = btile(0, &mut sc.0);
            let a0 = acts.qs.as_ptr().add((j0 * nb + b) * QK);
            if two {
                let b1 = btile(1, &mut sc.0);
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm3",
                    "tileloadd tmm1, [{a0} + {sa}]",
                    "tileloadd tmm2, [{b0} + {s64}]",
                    "tileloadd tmm4, [{a1} + {sa}]",
                    "tileloadd tmm5, [{b1} + {s64}]",
                    "tdpbsud tmm0, tmm1, tmm2",
                    "tdpbsud tmm3, tmm4, tmm5",
                    "tilestored [{c0} + {s64}], tmm0",
                    "tilestored [{c1} + {s64}], tmm3",
                    a0 = in(reg) a0,
                    a1 = in(reg) a0.add(QK),
                    sa = in(reg) a_stride,
                    b0 = in(reg) b0,
                    b1 = in(reg) b1,
                    s64 = in(reg) 64usize,
                    c0 = in(reg) sc.1.as_mut_ptr(),
                    c1 = in(reg) sc.1.as_mut_ptr().add(8 * 16),
                    options(nostack)
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tileloadd tmm1, [{a0} + {sa}]",
                    "tileloadd tmm2, [{b0} + {s64}]",
                    "tdpbsud tmm0, tmm1, tmm2",
                    "tilestored [{c0} + {s64}], tmm0",
                    a0 = in(reg) a0,
                    sa = in(reg) a_stride,
                    b0 = in(reg) b0,
                    s64 = in(reg) 64usize,
                    c0 = in(reg) sc.1.as_mut_ptr(),
                    options(nostack)
                );
            }
            for k in 0..1 + two as usize {
                let p = p.add(k * bb);
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
                let mw = if KIND == 1 {
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i))
                } else {
                    _mm512_setzero_ps()
                };
                let c = sc.1.as_ptr().add(k * 8 * 16);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ib = (j0 + r) * nb + b + k;
                    let mut s = _mm512_load_si512(c.add(16 * r) as *const __m512i);
                    // As dot_avx512::group_dot: the unsigned weights' offset, then the scales.
                    let shift = match KIND {
                        0 => 3,
                        2 => 7,
                        _ => 0,
                    };
                    if shift != 0 {
                        s = _mm512_sub_epi32(s, _mm512_set1_epi32(*ps.add(ib) << shift));
                    }
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*pd.add(ib)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, *acc);
                    if KIND == 1 {
                        *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(*pm.add(ib)), *acc);
                    }
                }
            }
            b += 2;
        }
        for (r, acc) in acc.iter().enumerate() {
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), *acc);
            for (i, &x) in lanes.iter().enumerate() {
                *og.add(i * ldo + r) = x;
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}
