//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong computing a metric: bad input or a missing resource.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A file could not be read.
    #[error("cannot read {path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (kept in the message, so not repeated as a `source`).
        err: std::io::Error,
    },
    /// A file is not valid UTF-8.
    #[error("{path}: invalid UTF-8 at line {line} (byte offset {offset})")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the first bad byte.
        line: usize,
        /// Byte offset of the first bad byte.
        offset: usize,
    },
    /// A file has no content.
    #[error("{0}: file is empty")]
    EmptyFile(PathBuf),
    /// Two inputs that must align do not have the same number of items.
    #[error("{what}: {left_name} has {left} but {right_name} has {right}")]
    LengthMismatch {
        /// What is being compared (e.g. "line count").
        what: String,
        /// The first input.
        left_name: String,
        /// Its count.
        left: usize,
        /// The second input.
        right_name: String,
        /// Its count.
        right: usize,
    },
    /// No hypotheses at all.
    #[error("no segments to score")]
    NoSegments,
    /// A segment has no reference in any stream.
    #[error("segment {0} (1-based) has no reference in any reference stream")]
    NoReference(usize),
    /// An option value is out of range or unknown.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A malformed line in an input file.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file (or a name for the input).
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// WordNet dictionary files are missing or malformed.
    #[error("WordNet: {0}")]
    WordNet(String),
}

/// Result with [`MetricsError`].
pub type Result<T> = std::result::Result<T, MetricsError>;
