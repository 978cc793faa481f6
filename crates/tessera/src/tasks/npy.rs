//! The NumPy `.npy` format (version 1.0) for a 2-D little-endian f32 matrix.

use crate::{Error, Result};
use std::path::Path;

/// Bytes of an `.npy` file holding `rows` (each of the same length) as `<f4` of shape (N, D).
pub fn npy_bytes(rows: &[Vec<f32>]) -> Result<Vec<u8>> {
    let d = rows.first().map(|r| r.len()).unwrap_or(0);
    if rows.iter().any(|r| r.len() != d) {
        return Err(Error::Input("npy: rows of different lengths".into()));
    }
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        d
    );
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64,
    // ending in a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + rows.len() * d * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for r in rows {
        for x in r {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(out)
}

/// Write `rows` as an `.npy` file (atomically).
pub fn write_npy(path: &Path, rows: &[Vec<f32>]) -> Result<()> {
    crate::util::fs::write_atomic(path, &npy_bytes(rows)?)
}

/// Read back a 2-D `<f4` `.npy` file written by [`npy_bytes`]: (rows, shape).
pub fn read_npy(bytes: &[u8]) -> Result<(Vec<f32>, (usize, usize))> {
    let bad = |m: &str| Error::Input(format!("npy: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file"));
    }
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + hl).ok_or_else(|| bad("short header"))?)
        .map_err(|_| bad("header is not text"))?;
    if !header.contains("'<f4'") {
        return Err(bad("only <f4 is supported"));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let (n, d) = match dims.as_slice() {
        [n, d] => (*n, *d),
        _ => return Err(bad("only 2-D arrays are supported")),
    };
    let data = &bytes[10 + hl..];
    if data.len() != n * d * 4 {
        return Err(bad("data length does not match the shape"));
    }
    let v = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
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
