//! What users call: embed, classify, tag.
//!
//! Each task is a thin layer over a model: it reads the model directory's own files (the
//! sentence-transformers pooling, the label map), tokenizes, batches and post-processes.

pub mod classify;
pub mod data;
pub mod embed;
pub mod finetune;
pub mod npy;
pub mod pretrain;
pub mod scratch;
pub mod tag;
pub mod word2vec;

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

/// Resolve a model spec to a directory: what [`crate::hub::resolve`] finds, else a model of that
/// name already in the cache.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    match crate::hub::resolve(spec) {
        Ok(p) => Ok(p),
        Err(e) => {
            if !spec.contains('/') && !spec.is_empty() {
                if let Some(p) = crate::hub::cache_dir()
                    .ok()
                    .map(|d| d.join(spec))
                    .filter(|p| p.is_dir())
                {
                    return Ok(p);
                }
            }
            Err(e)
        }
    }
}

/// Load `tokenizer.json` for an encoder with padding off and truncation at `max_len` tokens
/// (special tokens included), whatever the file itself declares.
pub fn encoder_tokenizer(path: &Path, max_len: usize) -> Result<tokenizers::Tokenizer> {
    if !path.exists() {
        return Err(Error::Input(format!(
            "{}: missing tokenizer.json",
            path.display()
        )));
    }
    let mut tok = crate::tokenizer::Tokenizer::from_file(path)?
        .inner()
        .clone();
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        direction: TruncationDirection::Right,
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    }))
    .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(tok)
}

/// Indices of `lens` in batches of at most `batch` items of similar length (longest first), so
/// that little padding is computed.
pub fn length_buckets(lens: &[usize], batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    order.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
}
