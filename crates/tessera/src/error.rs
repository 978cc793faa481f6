//! The library's error type: every failure names what was wrong.

use std::path::PathBuf;

/// Errors returned by the tessera library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    /// (The cause is part of the message, not a separate source, so `{:#}` prints it once.)
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A model or training configuration is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// Input data (a corpus, a prompt, a request) is unusable.
    #[error("invalid input: {0}")]
    Input(String),
    /// A checkpoint or weight file is missing pieces or corrupt.
    #[error("bad checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// A GGUF file is malformed or unsupported; `msg` names the field.
    #[error("bad GGUF file {path}: {msg}")]
    Gguf { path: PathBuf, msg: String },
    /// A model could not be found or fetched; `msg` says what to do.
    #[error("model '{name}': {msg}")]
    Model { name: String, msg: String },
    /// The tokenizer library failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The tensor engine failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// JSON (de)serialization failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The operation was interrupted on purpose (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error that names the file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// A checkpoint error that names the file.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Read a whole file as UTF-8 text, with errors naming the file and the first bad byte.
pub fn read_text(path: impl AsRef<std::path::Path>) -> Result<String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Input(format!(
            "{}: not valid UTF-8 (first bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
