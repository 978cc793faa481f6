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
pub mod sft;
pub mod tag;
pub mod translate;

use crate::{Error, Result};
use std::path::Path;
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

/// Which tokens of an over-long text a classifier keeps (`[CLS]` and `[SEP]` always stay).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// The first tokens (transformers' default, `truncation_side="right"`).
    #[default]
    Head,
    /// The last tokens (`truncation_side="left"`).
    Tail,
    /// The first quarter and the last three quarters of the budget: the opening and the end of
    /// a long text (Sun et al. 2019, "How to fine-tune BERT for text classification?", found
    /// head + tail best for long reviews; mail keeps its footers and unsubscribe lines there).
    HeadTail,
}

impl Truncation {
    /// The name used on the command line and in `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Truncation::Head => "head",
            Truncation::Tail => "tail",
            Truncation::HeadTail => "head-tail",
        }
    }

    /// What is kept, in words (for progress messages).
    pub fn kept(self) -> &'static str {
        match self {
            Truncation::Head => "first tokens",
            Truncation::Tail => "last tokens",
            Truncation::HeadTail => "first quarter and last three quarters",
        }
    }

    /// Cut `ids` (`[CLS]` content `[SEP]`, untruncated) to at most `max_len` tokens, keeping the
    /// first and last token and the content this rule keeps.
    pub fn apply(self, ids: &[u32], max_len: usize) -> Vec<u32> {
        if ids.len() <= max_len || ids.len() < 2 || max_len < 2 {
            return ids.to_vec();
        }
        let content = &ids[1..ids.len() - 1];
        let budget = max_len - 2;
        let head = match self {
            Truncation::Head => budget,
            Truncation::Tail => 0,
            Truncation::HeadTail => budget / 4,
        };
        let tail = budget - head;
        let mut out = Vec::with_capacity(max_len);
        out.push(ids[0]);
        out.extend_from_slice(&content[..head]);
        out.extend_from_slice(&content[content.len() - tail..]);
        out.push(ids[ids.len() - 1]);
        out
    }
}

impl std::str::FromStr for Truncation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "head" => Ok(Truncation::Head),
            "tail" => Ok(Truncation::Tail),
            "head-tail" => Ok(Truncation::HeadTail),
            other => Err(Error::Input(format!(
                "unknown truncation '{other}' (head, tail or head-tail)"
            ))),
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

#[cfg(test)]
mod tests {
    use super::Truncation;

    #[test]
    fn truncation_keeps_the_special_tokens_and_the_chosen_ends() {
        let ids: Vec<u32> = std::iter::once(101)
            .chain(1..=20)
            .chain(std::iter::once(102))
            .collect();
        assert_eq!(
            Truncation::HeadTail.apply(&ids, 30),
            ids,
            "short texts stay"
        );
        assert_eq!(Truncation::Head.apply(&ids, 6), vec![101, 1, 2, 3, 4, 102]);
        assert_eq!(
            Truncation::Tail.apply(&ids, 6),
            vec![101, 17, 18, 19, 20, 102]
        );
        // budget 8: 2 from the head, 6 from the tail
        assert_eq!(
            Truncation::HeadTail.apply(&ids, 10),
            vec![101, 1, 2, 15, 16, 17, 18, 19, 20, 102]
        );
        for t in [Truncation::Head, Truncation::Tail, Truncation::HeadTail] {
            assert_eq!(t.as_str().parse::<Truncation>().unwrap(), t);
            assert_eq!(t.apply(&ids, 2), vec![101, 102]);
        }
        assert!("middle".parse::<Truncation>().is_err());
    }
}
