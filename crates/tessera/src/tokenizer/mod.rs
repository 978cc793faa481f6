//! Tokenizers: load any `tokenizer.json`, train a byte-level BPE, decode incrementally.

pub mod chat;
pub mod gguf;
pub mod wordpiece;

use crate::{Error, Result};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// End of text; also used as the beginning-of-sequence marker by models trained here.
pub const EOS: &str = "<|endoftext|>";
/// Special tokens every tokenizer trained by tessera carries (ChatML turn markers and padding).
pub const SPECIAL_TOKENS: [&str; 4] = [EOS, "<|im_start|>", "<|im_end|>", "<|pad|>"];

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// A text tokenizer (wraps the reference `tokenizers` implementation).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer(vocab={})", self.vocab_size())
    }
}

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Parse the bytes of a Hugging Face `tokenizer.json`.
    ///
    /// The `tokenizers` crate (0.22) panics instead of returning an error on malformed JSON
    /// inside a `"decoder"` object (found by the `tokenizer_json` fuzz target), so the JSON syntax
    /// is parsed first (fully: skipping strings unparsed would let bad escapes such as a lone
    /// surrogate through): every such input is then an error. A panic that remains is caught and
    /// reported as an error as well.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| Error::Tokenizer(format!("not valid JSON: {e}")))?;
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| {
                Error::Tokenizer("the tokenizers library failed on this file (it panicked)".into())
            })?
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Tokenizer { inner })
    }

    /// Train a byte-level BPE with `vocab_size` entries (special tokens included) on `texts`.
    /// A small text can end with fewer entries, when no pair occurs twice any more.
    ///
    /// Every byte is in the initial alphabet, so any UTF-8 text encodes and decodes exactly.
    pub fn train_bpe(texts: &[&str], vocab_size: usize) -> Result<Self> {
        let min_vocab = 256 + SPECIAL_TOKENS.len();
        if vocab_size < min_vocab {
            return Err(Error::Config(format!(
                "vocab size {vocab_size} is too small for a byte-level BPE (at least {min_vocab})"
            )));
        }
        if texts.iter().all(|t| t.is_empty()) {
            return Err(Error::Input(
                "cannot train a tokenizer on empty text".into(),
            ));
        }
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        inner.with_post_processor(Some(ByteLevel::new(false, false, true)));
        // Paragraph-sized pieces keep runs of newlines together so BPE can learn them.
        let pieces = texts.iter().flat_map(|t| t.split_inclusive("\n\n"));
        inner.train(&mut trainer, pieces).map_err(tk_err)?;
        inner.add_special_tokens(&specials);
        Ok(Tokenizer { inner })
    }

    /// Wrap a tokenizer built elsewhere (e.g. from GGUF metadata).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer { inner }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Save as `tokenizer.json`.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    /// Save as `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::fs::write_atomic(path, self.to_json()?.as_bytes())
    }

    /// Token ids of `text` (no BOS/EOS added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Token pieces (as strings) of `text`.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tk_err)?
            .get_tokens()
            .to_vec())
    }

    /// Text of `ids`, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// Text of `ids` without special tokens (padding, end markers): a generated translation or
    /// summary as transformers' `decode(..., skip_special_tokens=True)` prints it.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tk_err)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string, if present.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner().id_to_token(id)
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// End-of-sequence id: `<|endoftext|>`, `</s>` or `<|im_end|>`, whichever exists first.
    pub fn eos_id(&self) -> Option<u32> {
        ["<|endoftext|>", "</s>", "<|im_end|>", "<eos>"]
            .iter()
            .find_map(|t| self.token_id(t))
    }

    /// An incremental decoder for streaming output.
    pub fn stream(&self) -> DecodeStream<'_> {
        DecodeStream {
            tok: self,
            ids: Vec::new(),
            emitted: 0,
        }
    }
}

/// Turns a growing list of ids into text pieces, holding back incomplete UTF-8 sequences.
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    /// Bytes of the decoded text already returned.
    emitted: usize,
}

impl DecodeStream<'_> {
    /// Add one id; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }

    /// All text decoded so far.
    pub fn text(&self) -> Result<String> {
        self.tok.decode(&self.ids)
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: &str = "It is a truth universally acknowledged, that a single man in possession of a good \
fortune, must be in want of a wife.\n\nHowever little known the feelings or views of such a man may be on his \
first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.\n";

    #[test]
    fn roundtrip_is_exact_for_any_utf8() {
        let tok = Tokenizer::train_bpe(&[CORPUS], 300).unwrap();
        // A tiny corpus may not support every merge: at most the requested size, never below bytes + specials.
        assert!(
            (260..=300).contains(&tok.vocab_size()),
            "{}",
            tok.vocab_size()
        );
        for s in [
            "",
            "   leading and trailing   ",
            "tabs\tand\t\ttabs\n\n\nnewlines\r\n",
            "中文文本，标点。",
            "emoji 👩🏽‍💻 and 🇪🇸 flags",
            "combining: e\u{0301} a\u{0308} \u{1100}\u{1161}",
            "mixed   \u{00a0}nbsp\u{2028}sep",
            "<|endoftext|> special text <|im_start|>",
            CORPUS,
        ] {
            let ids = tok.encode(s).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), s, "roundtrip of {s:?}");
        }
        for t in SPECIAL_TOKENS {
            assert!(tok.token_id(t).is_some(), "{t}");
        }
        assert_eq!(tok.eos_id(), Some(0));
    }

    #[test]
    fn stream_holds_back_partial_characters() {
        let tok = Tokenizer::train_bpe(&[CORPUS], 300).unwrap();
        let text = "a 👩🏽‍💻 b 中文";
        let ids = tok.encode(text).unwrap();
        let mut s = tok.stream();
        let mut out = String::new();
        for id in ids {
            if let Some(p) = s.push(id).unwrap() {
                assert!(!p.contains('\u{FFFD}'));
                out.push_str(&p);
            }
        }
        assert_eq!(out, text);
    }

    #[test]
    fn save_load_roundtrip_and_errors() {
        let tok = Tokenizer::train_bpe(&[CORPUS], 300).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        tok.save(&p).unwrap();
        let t2 = Tokenizer::from_file(&p).unwrap();
        assert_eq!(t2.encode(CORPUS).unwrap(), tok.encode(CORPUS).unwrap());
        assert!(Tokenizer::from_file(dir.path().join("missing.json")).is_err());
        std::fs::write(&p, b"{not json").unwrap();
        assert!(Tokenizer::from_file(&p).is_err());
        assert!(Tokenizer::train_bpe(&[CORPUS], 100).is_err());
        assert!(Tokenizer::train_bpe(&[""], 300).is_err());
    }
}
