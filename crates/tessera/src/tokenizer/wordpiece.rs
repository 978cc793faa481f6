//! Training a BERT-style WordPiece tokenizer (the `tokenizers` crate's trainer) for encoders
//! trained from scratch.
//!
//! The pipeline is BERT's: a normalizer that cleans control characters, puts spaces around every
//! CJK character (so Chinese and Japanese text is split one character per word) and optionally
//! lowercases and strips accents; a pre-tokenizer that splits at whitespace and punctuation; a
//! WordPiece model with `##` continuation pieces; `[CLS] … [SEP]` added around each input. The
//! saved `tokenizer.json` is the layout Hugging Face's `BertTokenizerFast` reads.

use super::Tokenizer;
use crate::{Error, Result};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::AddedToken;

/// Padding token; id 0 in tokenizers trained here (BERT's `pad_token_id`).
pub const PAD: &str = "[PAD]";
/// Unknown token (characters never seen in training).
pub const UNK: &str = "[UNK]";
/// Start-of-input token, pooled by sequence-classification heads.
pub const CLS: &str = "[CLS]";
/// Separator / end-of-input token.
pub const SEP: &str = "[SEP]";
/// Mask token (masked-language-model pretraining).
pub const MASK: &str = "[MASK]";
/// BERT's special tokens, in id order (`[PAD]` = 0 … `[MASK]` = 4).
pub const BERT_SPECIAL_TOKENS: [&str; 5] = [PAD, UNK, CLS, SEP, MASK];

/// Settings of [`train_wordpiece`].
#[derive(Clone, Debug)]
pub struct WordPieceOptions {
    /// Target vocabulary size, special tokens included. Every character seen in training is kept,
    /// so a text with more distinct characters than this ends with a larger vocabulary (no merges).
    pub vocab_size: usize,
    /// A merge must occur at least this often.
    pub min_frequency: u64,
    /// Lowercase and strip accents (BERT "uncased").
    pub lowercase: bool,
    /// Split CJK text into single characters before WordPiece (BERT's way). When false, a run
    /// of CJK characters is one word and WordPiece learns multi-character pieces of it.
    pub split_cjk: bool,
}

impl Default for WordPieceOptions {
    fn default() -> Self {
        WordPieceOptions {
            vocab_size: 8000,
            min_frequency: 2,
            lowercase: true,
            split_cjk: true,
        }
    }
}

/// Train a WordPiece tokenizer on `texts` (BERT pipeline, see the module docs).
pub fn train_wordpiece(texts: &[&str], opts: &WordPieceOptions) -> Result<Tokenizer> {
    let min = BERT_SPECIAL_TOKENS.len() + 1;
    if opts.vocab_size < min {
        return Err(Error::Config(format!(
            "vocab size {} is too small for a WordPiece tokenizer (at least {min})",
            opts.vocab_size
        )));
    }
    if texts.iter().all(|t| t.trim().is_empty()) {
        return Err(Error::Input(
            "cannot train a tokenizer on empty text".into(),
        ));
    }
    let specials: Vec<AddedToken> = BERT_SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    let mut trainer: TrainerWrapper = WordPieceTrainerBuilder::new()
        .vocab_size(opts.vocab_size)
        .min_frequency(opts.min_frequency)
        .show_progress(false)
        .special_tokens(specials.clone())
        .build()
        .into();
    let model = WordPiece::builder()
        .unk_token(UNK.into())
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_normalizer(Some(BertNormalizer::new(
        true,
        opts.split_cjk,
        None, // strip accents when lowercasing, as BERT does
        opts.lowercase,
    )));
    inner.with_pre_tokenizer(Some(BertPreTokenizer));
    inner.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    inner
        .train(&mut trainer, texts.iter().copied())
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let model = canonical_ids(&inner.get_vocab(false))?;
    inner.with_model(model);
    inner.add_special_tokens(&specials);
    let id = |t: &str| {
        inner
            .token_to_id(t)
            .ok_or_else(|| Error::Tokenizer(format!("internal: trained vocabulary lacks {t}")))
    };
    let processor = BertProcessing::new((SEP.into(), id(SEP)?), (CLS.into(), id(CLS)?));
    inner.with_post_processor(Some(processor));
    Ok(Tokenizer::from_inner(inner))
}

/// The trained vocabulary with ids in a fixed order: the special tokens first, then every other
/// piece sorted by its text. (The trainer numbers pieces in hash-map order, which changes from
/// run to run; sorted ids make the same vocabulary give the same ids, so a seeded run is
/// repeatable. The trainer may still pick different merges among pairs of equal count.)
fn canonical_ids(vocab: &std::collections::HashMap<String, u32>) -> Result<WordPiece> {
    let mut rest: Vec<&String> = vocab
        .keys()
        .filter(|k| !BERT_SPECIAL_TOKENS.contains(&k.as_str()))
        .collect();
    rest.sort();
    let ordered = BERT_SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(rest.into_iter().cloned());
    let map: serde_json::Map<String, serde_json::Value> = ordered
        .enumerate()
        .map(|(i, t)| (t, serde_json::Value::from(i as u64)))
        .collect();
    let json = serde_json::json!({
        "type": "WordPiece",
        "unk_token": UNK,
        "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100,
        "vocab": map,
    });
    serde_json::from_str(&json.to_string()).map_err(|e| {
        Error::Tokenizer(format!(
            "internal: rebuilding the WordPiece vocabulary: {e}"
        ))
    })
}

/// Check that a tokenizer has what a BERT-style encoder needs (`[PAD]`, `[CLS]`, `[SEP]`, `[UNK]`)
/// and return the padding id.
pub fn bert_pad_id(tok: &tokenizers::Tokenizer) -> Result<u32> {
    for t in [UNK, CLS, SEP] {
        if tok.token_to_id(t).is_none() {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has no {t} token (a BERT-style WordPiece vocabulary is expected)"
            )));
        }
    }
    tok.token_to_id(PAD)
        .ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no {PAD} token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 4] = [
        "这家酒店的服务很好，房间也干净。",
        "服务太差了，再也不来了！",
        "The room was clean and the staff were friendly.",
        "Staff friendly, rooms clean; would stay again.",
    ];

    #[test]
    fn splits_cjk_per_character_and_wraps_in_cls_sep() {
        let tok = train_wordpiece(&TEXTS, &WordPieceOptions::default()).unwrap();
        let inner = tok.inner();
        assert_eq!(inner.token_to_id(PAD), Some(0));
        let enc = inner.encode("服务很好", true).unwrap();
        assert_eq!(enc.get_tokens(), ["[CLS]", "服", "务", "很", "好", "[SEP]"]);
        let enc = inner.encode("Friendly STAFF", true).unwrap();
        assert_eq!(enc.get_tokens()[1..3], ["friendly", "staff"]);
        // An unseen character is [UNK], never an error.
        let enc = inner.encode("龘", false).unwrap();
        assert_eq!(enc.get_tokens(), ["[UNK]"]);
        assert_eq!(bert_pad_id(inner).unwrap(), 0);
    }

    #[test]
    fn cjk_words_when_not_split() {
        let o = WordPieceOptions {
            split_cjk: false,
            ..Default::default()
        };
        let texts = ["服务很好", "服务很差", "房间很好", "服务态度很好"];
        let tok = train_wordpiece(&texts, &o).unwrap();
        let enc = tok.inner().encode("服务很好", false).unwrap();
        assert!(enc.get_tokens().len() < 4, "{:?}", enc.get_tokens());
        assert!(enc.get_tokens()[1..].iter().all(|t| t.starts_with("##")));
    }

    #[test]
    fn round_trips_through_json_and_decodes() {
        let tok = train_wordpiece(&TEXTS, &WordPieceOptions::default()).unwrap();
        let back = Tokenizer::from_inner(
            tokenizers::Tokenizer::from_bytes(tok.to_json().unwrap().as_bytes()).unwrap(),
        );
        for t in TEXTS {
            let a = tok.inner().encode(t, true).unwrap();
            let b = back.inner().encode(t, true).unwrap();
            assert_eq!(a.get_ids(), b.get_ids());
            let text = back.inner().decode(b.get_ids(), true).unwrap();
            let squash = |s: &str| s.to_lowercase().replace(' ', "");
            assert_eq!(squash(&text), squash(t), "{text}");
        }
    }

    #[test]
    fn same_pieces_same_ids() {
        // Per-character CJK text has no merges to tie: the same vocabulary, numbered the same.
        let zh = ["服务很好房间干净", "服务太差再也不来", "早餐一般价格太贵"];
        let a = train_wordpiece(&zh, &WordPieceOptions::default()).unwrap();
        for _ in 0..3 {
            let b = train_wordpiece(&zh, &WordPieceOptions::default()).unwrap();
            assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let o = WordPieceOptions {
            vocab_size: 3,
            ..Default::default()
        };
        assert!(train_wordpiece(&TEXTS, &o).is_err());
        let e = train_wordpiece(&["", "  "], &WordPieceOptions::default()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
