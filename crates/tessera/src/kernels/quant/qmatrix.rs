//! `QMatrix`: a rows × cols weight matrix kept in its GGML block format.

use std::sync::Arc;

use super::dequant::dequantize_into;
use super::formats::QType;
use super::interleave;
use super::matmul::{self, Parallel, Rayon};
use super::SimdLevel;
use crate::{Error, Result};

/// The bytes behind a matrix: owned (`Arc<[u8]>`) or any shared buffer such as a memory map.
type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A weight matrix in a GGML format: `rows` rows of `cols` elements, each row
/// `cols / block_elems` consecutive blocks, rows one after another (GGUF's layout, where ggml's
/// `ne[0]` is `cols`), or, after [`QMatrix::packed`], groups of 16 such rows interleaved for the
/// broadcast kernels (`interleave`). Cloning shares the bytes.
#[derive(Clone)]
pub struct QMatrix {
    qtype: QType,
    /// Whether the bytes are in the 16-row interleaved layout.
    packed: bool,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Bytes,
    start: usize,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("qtype", &self.qtype)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl QMatrix {
    /// A matrix over owned bytes (exactly `rows * cols` elements of `qtype`).
    ///
    /// Errors if `cols` is not a multiple of the block size, or the byte count is not exactly the
    /// size of `rows` rows.
    pub fn new(qtype: QType, rows: usize, cols: usize, data: impl Into<Arc<[u8]>>) -> Result<Self> {
        let data: Arc<[u8]> = data.into();
        let len = data.len();
        Self::from_shared(qtype, rows, cols, Arc::new(data), 0, len)
    }

    /// A matrix over `len` bytes at `offset` of a shared buffer (e.g. `Arc<memmap2::Mmap>`), without
    /// copying. The buffer is kept alive as long as the matrix (and its clones).
    pub fn from_shared(
        qtype: QType,
        rows: usize,
        cols: usize,
        data: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        let bad = |msg: String| Error::Input(format!("{qtype} matrix {rows}x{cols}: {msg}"));
        if qtype == QType::Q8K {
            return Err(bad(
                "q8_K is an activation format, not a weight format".into()
            ));
        }
        let row_bytes = qtype.bytes_for(cols).ok_or_else(|| {
            bad(format!(
                "{cols} columns is not a multiple of the block size {}",
                qtype.block_elems()
            ))
        })?;
        let need = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| bad("size overflows".into()))?;
        if len != need {
            return Err(bad(format!("expected {need} bytes, got {len}")));
        }
        let have = (*data).as_ref().len();
        if offset.checked_add(len).is_none_or(|end| end > have) {
            return Err(bad(format!(
                "bytes {offset}..+{len} lie outside the buffer of {have} bytes"
            )));
        }
        Ok(QMatrix {
            qtype,
            packed: false,
            rows,
            cols,
            row_bytes,
            data,
            start: offset,
        })
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// The matrix in the layout the fastest kernel of this CPU reads: the 16-row interleaved
    /// layout ([`QMatrix::interleaved`]) where the AVX-512 VNNI kernels run and the matrix has
    /// one; otherwise `self` unchanged (a clone sharing the bytes).
    pub fn packed(&self) -> QMatrix {
        if SimdLevel::detect() != SimdLevel::Avx512Vnni {
            return self.clone();
        }
        self.interleaved().unwrap_or_else(|_| self.clone())
    }

    /// A copy in the 16-row interleaved layout (`interleave`: Q4_0, Q4_1 and Q8_0 with a
    /// multiple of 16 rows; the copy owns its bytes, the same size). Products, rows and
    /// dequantization give the same numbers as the row layout, on every kernel level (the
    /// AVX-512 VNNI kernels read it fastest; the others run a portable kernel).
    pub fn interleaved(&self) -> Result<QMatrix> {
        if self.packed {
            return Ok(self.clone());
        }
        if !interleave::supports(self.qtype) || !self.rows.is_multiple_of(interleave::GROUP) {
            return Err(Error::Input(format!(
                "{} matrix {}x{}: the interleaved layout takes Q4_0, Q4_1 or Q8_0 with a \
                 multiple of {} rows",
                self.qtype,
                self.rows,
                self.cols,
                interleave::GROUP
            )));
        }
        let bytes = interleave::pack(self.qtype, self.bytes(), self.rows, self.cols);
        let data: Arc<[u8]> = bytes.into();
        Ok(QMatrix {
            packed: true,
            data: Arc::new(data),
            start: 0,
            ..self.clone()
        })
    }

    /// A copy with its own bytes (same layout), e.g. to measure products on distinct memory.
    pub fn deep_copy(&self) -> QMatrix {
        let data: Arc<[u8]> = self.bytes().to_vec().into();
        QMatrix {
            data: Arc::new(data),
            start: 0,
            ..self.clone()
        }
    }

    /// Whether the bytes are in the 16-row interleaved layout ([`QMatrix::packed`]).
    pub fn is_packed(&self) -> bool {
        self.packed
    }

    /// The stored bytes of the whole matrix: GGML rows, or interleaved groups when
    /// [`QMatrix::is_packed`].
    pub fn bytes(&self) -> &[u8] {
        &(*self.data).as_ref()[self.start..self.start + self.row_bytes * self.rows]
    }

    /// A copy with the rows reordered: row `r` of `self` becomes row `to(r)` (`to` must be a
    /// permutation of `0..rows`). Rows are independent blocks, so this moves bytes only.
    pub fn permute_rows(&self, to: impl Fn(usize) -> usize) -> Result<QMatrix> {
        if self.packed {
            return Err(Error::Input(
                "rows of an interleaved matrix cannot be permuted; permute before packing".into(),
            ));
        }
        let mut out = vec![0u8; self.row_bytes * self.rows];
        let mut seen = vec![false; self.rows];
        for r in 0..self.rows {
            let t = to(r);
            if t >= self.rows || std::mem::replace(&mut seen[t], true) {
                return Err(Error::Input(format!(
                    "row permutation of a {}-row matrix maps {r} to {t}",
                    self.rows
                )));
            }
            out[t * self.row_bytes..(t + 1) * self.row_bytes].copy_from_slice(self.row_bytes_of(r));
        }
        QMatrix::new(self.qtype, self.rows, self.cols, out)
    }

    /// The raw bytes of row `r`.
    fn row_bytes_of(&self, r: usize) -> &[u8] {
        &self.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The whole matrix as f32, row-major (rows, cols): the scalar reference dequantization.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        if self.packed {
            interleave::dequantize_into(self.qtype, self.bytes(), self.cols, &mut out);
        } else {
            dequantize_into(self.qtype, self.bytes(), &mut out);
        }
        out
    }

    /// The whole matrix as f32, row-major (rows, cols), dequantized on the rayon pool (the same
    /// values as [`QMatrix::dequantize`]; the frozen weights of LoRA training).
    pub fn dequantize_par(&self) -> Vec<f32> {
        crate::kernels::new_rows(self.rows * self.cols, self.cols, |r, row| {
            self.dequantize_row(r, row)
        })
    }

    /// Row `r` as f32 into `out` (for embedding lookups).
    ///
    /// Panics if `r >= rows` or `out.len() != cols`; [`QMatrix::try_dequantize_row`] returns an
    /// error instead.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if let Err(e) = self.try_dequantize_row(r, out) {
            panic!("{e}");
        }
    }

    /// Row `r` as f32 into `out`, or an error naming the bad index or length.
    pub fn try_dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows {
            return Err(Error::Input(format!(
                "row {r} out of range for a matrix of {} rows",
                self.rows
            )));
        }
        if out.len() != self.cols {
            return Err(Error::Input(format!(
                "row buffer of {} for {} columns",
                out.len(),
                self.cols
            )));
        }
        if self.packed {
            interleave::dequantize_row(self.qtype, self.bytes(), self.cols, r, out);
        } else {
            dequantize_into(self.qtype, self.row_bytes_of(r), out);
        }
        Ok(())
    }

    /// `out (n, rows) = x (n, cols) W^T`, with the fastest kernel this CPU has.
    ///
    /// Quantized types quantize `x` to 8 bits per block (as llama.cpp does) and use integer dot
    /// products; F32/F16/BF16 weights multiply in f32. Runs on the global rayon pool
    /// (`RAYON_NUM_THREADS`); allocates nothing once the thread's scratch has grown.
    ///
    /// Speed: for many small products in a row (a decode step), use [`QMatrix::matmul_on`] with a
    /// [`HotPool`](crate::util::pool::HotPool): handing each product to rayon and waiting for it costs about 30 µs per call on
    /// the 2-core test machine, more than a 576 x 576 Q4_1 product itself (about 10 µs).
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        self.matmul_with(SimdLevel::detect(), x, n, out)
    }

    /// [`QMatrix::matmul`] on the threads of `par` (a [`HotPool`](crate::util::pool::HotPool), or [`Rayon`]).
    pub fn matmul_on(
        &self,
        par: &dyn Parallel,
        x: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.check(SimdLevel::detect(), x, n, out)?;
        if n > 0 && self.rows > 0 {
            let b = self.bytes();
            matmul::matmul(
                SimdLevel::detect(),
                self.qtype,
                self.packed,
                b,
                self.rows,
                self.cols,
                x,
                n,
                out,
                par,
            );
        }
        Ok(())
    }

    /// [`QMatrix::matmul`] with a given kernel level (for tests and benchmarks); errors if the CPU
    /// lacks it.
    pub fn matmul_with(
        &self,
        level: SimdLevel,
        x: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.check(level, x, n, out)?;
        if n > 0 && self.rows > 0 {
            let b = self.bytes();
            matmul::matmul(
                level,
                self.qtype,
                self.packed,
                b,
                self.rows,
                self.cols,
                x,
                n,
                out,
                &Rayon,
            );
        }
        Ok(())
    }

    fn check(&self, level: SimdLevel, x: &[f32], n: usize, out: &[f32]) -> Result<()> {
        if !level.is_available() {
            return Err(Error::Input(format!(
                "SIMD level {} is not available on this CPU",
                level.name()
            )));
        }
        if x.len() != n * self.cols {
            return Err(Error::Input(format!(
                "matmul: x has {} values, expected {n} x {}",
                x.len(),
                self.cols
            )));
        }
        if out.len() != n * self.rows {
            return Err(Error::Input(format!(
                "matmul: out has {} values, expected {n} x {}",
                out.len(),
                self.rows
            )));
        }
        Ok(())
    }
}

/// `outs[i] = W_i x` for several matrices with the same input vector (e.g. the q, k and v
/// projections of one token), as a single parallel job on `par`: `x` is quantized once per block
/// size. At most 8 products.
pub fn matvec_many(
    par: &dyn Parallel,
    x: &[f32],
    prods: &mut [(&QMatrix, &mut [f32])],
) -> Result<()> {
    matmul_many(par, x, 1, prods)
}

/// `outs[i] = x W_i^T` for several matrices with the same `x` of `n` rows (the q, k and v
/// projections of a step): [`matvec_many`] for one row; for several, one parallel job when the
/// matrices are interleaved (AVX-512), else one product each. Every output row equals what
/// [`QMatrix::matmul_on`] gives it alone. At most 8 products.
pub fn matmul_many(
    par: &dyn Parallel,
    x: &[f32],
    n: usize,
    prods: &mut [(&QMatrix, &mut [f32])],
) -> Result<()> {
    if prods.len() > 8 {
        return Err(Error::Input(format!(
            "matmul_many: {} products (at most 8)",
            prods.len()
        )));
    }
    let level = SimdLevel::detect();
    for (m, out) in prods.iter() {
        m.check(level, x, n, out)?;
    }
    if n == 0 {
        return Ok(());
    }
    let count = prods.len();
    let mut it = prods.iter_mut();
    let mut list: [matmul::MatVec<'_>; 8] = std::array::from_fn(|_| match it.next() {
        Some((m, out)) => matmul::MatVec {
            t: m.qtype,
            packed: m.packed,
            w: m.bytes(),
            rows: m.rows,
            out,
        },
        None => matmul::MatVec {
            t: QType::F32,
            packed: false,
            w: &[],
            rows: 0,
            out: &mut [],
        },
    });
    matmul::matmul_many(level, x, n, &mut list[..count], par);
    Ok(())
}
