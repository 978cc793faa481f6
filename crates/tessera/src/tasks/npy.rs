//! The NumPy `.npy` format for a 2-D little-endian f32 matrix (the `npyz` crate reads and writes
//! it; these wrap it in tessera's errors and shapes).

use crate::{Error, Result};
use npyz::WriterBuilder;
use std::path::Path;

fn npy_err(e: std::io::Error) -> Error {
    Error::Input(format!("npy: {e}"))
}

/// Bytes of an `.npy` file holding `rows` (each of the same length) as `<f4` of shape (N, D).
pub fn npy_bytes(rows: &[Vec<f32>]) -> Result<Vec<u8>> {
    let d = rows.first().map(|r| r.len()).unwrap_or(0);
    if rows.iter().any(|r| r.len() != d) {
        return Err(Error::Input("npy: rows of different lengths".into()));
    }
    let mut out = Vec::with_capacity(128 + rows.len() * d * 4);
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[rows.len() as u64, d as u64])
        .writer(&mut out)
        .begin_nd()
        .map_err(npy_err)?;
    for r in rows {
        w.extend(r.iter().copied()).map_err(npy_err)?;
    }
    w.finish().map_err(npy_err)?;
    Ok(out)
}

/// Write `rows` as an `.npy` file (atomically).
pub fn write_npy(path: &Path, rows: &[Vec<f32>]) -> Result<()> {
    crate::util::fs::write_atomic(path, &npy_bytes(rows)?)
}

/// Read a 2-D `<f4` `.npy` file: (values in row-major order, shape).
pub fn read_npy(bytes: &[u8]) -> Result<(Vec<f32>, (usize, usize))> {
    let f = npyz::NpyFile::new(bytes).map_err(npy_err)?;
    let (n, d) = match f.shape() {
        [n, d] => (*n as usize, *d as usize),
        _ => return Err(Error::Input("npy: only 2-D arrays are supported".into())),
    };
    if f.order() != npyz::Order::C {
        return Err(Error::Input(
            "npy: Fortran-ordered arrays are not supported".into(),
        ));
    }
    let v = f.into_vec::<f32>().map_err(npy_err)?;
    Ok((v, (n, d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_round_trips() {
        let rows = vec![vec![1.0f32, -2.5, 3.0], vec![0.0, 0.5, 7.25]];
        let b = npy_bytes(&rows).unwrap();
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(b[10 + hl - 1], b'\n');
        let (v, shape) = read_npy(&b).unwrap();
        assert_eq!(shape, (2, 3));
        assert_eq!(v, vec![1.0, -2.5, 3.0, 0.0, 0.5, 7.25]);
    }
}
