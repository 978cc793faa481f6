//! Upper bounds on the sizes a model file may state (`config.json`, GGUF metadata).
//!
//! A size read from a file is checked against these before anything is allocated from it, so a
//! damaged or hostile file (a context length of 2^40, a million heads) gets one error naming the
//! field instead of an allocation failure that aborts the process. They sit far above every
//! released model of these families (today's largest: vocabularies of 256k, hidden sizes of 16k–25k,
//! 126 layers, 128 heads of 128–256, feed-forward widths of 53k–74k, contexts of 128k–10M), and
//! the allocations sized from them are fallible as well (KV caches, rotary tables, fresh weights).

use crate::{Error, Result};

/// Vocabulary entries.
pub const MAX_VOCAB: usize = 1 << 24;
/// Hidden (model) width.
pub const MAX_HIDDEN: usize = 1 << 16;
/// Transformer blocks.
pub const MAX_LAYERS: usize = 1 << 12;
/// Attention heads (query or key/value).
pub const MAX_HEADS: usize = 1 << 12;
/// Width of one attention head.
pub const MAX_HEAD_DIM: usize = 1 << 12;
/// Feed-forward (intermediate) width.
pub const MAX_INTERMEDIATE: usize = 1 << 20;
/// Positions of context.
pub const MAX_CONTEXT: usize = 1 << 24;
/// Token-type (segment) vocabulary of an encoder.
pub const MAX_TYPE_VOCAB: usize = 1 << 16;

/// Fail unless `0 < value <= max`, naming `field` (its `config.json` name).
pub fn check(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::Config(format!("{field} must be positive")));
    }
    if value > max {
        return Err(Error::Config(format!(
            "{field} = {value} is beyond what tessera supports ({max}); the file is damaged or \
             not a model of this kind"
        )));
    }
    Ok(())
}
