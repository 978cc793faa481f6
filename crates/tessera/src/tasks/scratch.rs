//! Encoders trained from scratch: a BERT config file (Hugging Face `config.json` names, without
//! weights) plus a WordPiece tokenizer trained on the training texts, or a given one.
//!
//! The config's `vocab_size` is the tokenizer trainer's target (unless overridden); the model's
//! `vocab_size` and `pad_token_id` are then taken from the tokenizer, so they always agree.

use crate::models::TransformerConfig;
use crate::tokenizer::wordpiece::{bert_pad_id, train_wordpiece, WordPieceOptions};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Vocabulary size of a trained tokenizer when neither the config nor the caller gives one.
pub const DEFAULT_VOCAB_SIZE: usize = 8000;

/// How to get the tokenizer of a model trained from scratch.
#[derive(Clone, Debug, Default)]
pub struct ScratchTokenizer<'a> {
    /// Use this `tokenizer.json` instead of training one.
    pub file: Option<&'a Path>,
    /// Trainer target (default: the config's `vocab_size`, else [`DEFAULT_VOCAB_SIZE`]).
    pub vocab_size: Option<usize>,
    /// Keep case and accents (default: lowercase, as BERT "uncased").
    pub cased: bool,
    /// Keep runs of CJK characters whole so WordPiece learns multi-character pieces (default:
    /// one character per word, as BERT).
    pub cjk_words: bool,
}

/// Whether `model` names a config file to train from scratch (rather than a model directory).
pub fn is_scratch_config(model: &Path) -> bool {
    model.is_file()
}

/// Read an encoder config for training from scratch: it must be a JSON object with
/// `"model_type": "bert"` and valid sizes (`vocab_size` and `pad_token_id` may be left out).
/// Returns the config and the `vocab_size` it asked for, if any.
pub fn read_scratch_config(path: &Path) -> Result<(TransformerConfig, Option<usize>)> {
    let named = |e: Error| Error::Config(format!("{}: {}", path.display(), strip_kind(&e)));
    let text = crate::error::read_text(path)?;
    let mut v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not valid JSON: {e}", path.display())))?;
    let o = v.as_object_mut().ok_or_else(|| {
        Error::Config(format!(
            "{}: a config must be a JSON object",
            path.display()
        ))
    })?;
    match o.get("model_type").and_then(Value::as_str) {
        Some("bert") => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "{}: model_type '{other}' is not an encoder; training from scratch here needs a BERT config (\"model_type\": \"bert\")",
                path.display()
            )))
        }
        None => {
            return Err(Error::Config(format!(
                "{}: no \"model_type\"; training from scratch needs a BERT config (\"model_type\": \"bert\")",
                path.display()
            )))
        }
    }
    let asked = match o.get("vocab_size") {
        None | Some(Value::Null) => None,
        Some(x) => Some(x.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            Error::Config(format!(
                "{}: 'vocab_size' must be a positive integer, got {x}",
                path.display()
            ))
        })? as usize),
    };
    // The tokenizer decides the final vocabulary; a placeholder lets the rest be checked now.
    o.insert("vocab_size".into(), Value::from(asked.unwrap_or(1) as u64));
    let cfg = TransformerConfig::from_hf_json(&v).map_err(named)?;
    Ok((cfg, asked))
}

/// The message of a config error without its "config error:" kind prefix, to re-wrap it.
fn strip_kind(e: &Error) -> String {
    match e {
        Error::Config(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The config and tokenizer of an encoder to train from scratch: the config file at `config`
/// (see [`read_scratch_config`]), and a tokenizer loaded from `tok.file` or trained on `texts`.
/// The returned config's `vocab_size` and `pad_token_id` are the tokenizer's.
pub fn scratch_encoder(
    config: &Path,
    texts: &[&str],
    tok: &ScratchTokenizer<'_>,
) -> Result<(TransformerConfig, Tokenizer)> {
    let (mut cfg, asked) = read_scratch_config(config)?;
    let tokenizer = match tok.file {
        Some(p) => Tokenizer::from_file(p)?,
        None => {
            if texts.iter().all(|t| t.trim().is_empty()) {
                return Err(Error::Input(
                    "the training texts are empty: nothing to train a tokenizer on".into(),
                ));
            }
            let opts = WordPieceOptions {
                vocab_size: tok.vocab_size.or(asked).unwrap_or(DEFAULT_VOCAB_SIZE),
                lowercase: !tok.cased,
                split_cjk: !tok.cjk_words,
                ..Default::default()
            };
            train_wordpiece(texts, &opts)?
        }
    };
    cfg.pad_token_id = Some(bert_pad_id(tokenizer.inner())?);
    cfg.vocab_size = tokenizer.vocab_size();
    cfg.validate()?;
    Ok((cfg, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: serde_json::Value) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), v.to_string()).unwrap();
        f
    }

    fn tiny() -> serde_json::Value {
        serde_json::json!({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64})
    }

    #[test]
    fn vocab_comes_from_the_tokenizer() {
        let f = config(tiny());
        let texts = ["很好很好", "太差了", "good food", "bad food"];
        let (cfg, tok) = scratch_encoder(f.path(), &texts, &Default::default()).unwrap();
        assert_eq!(cfg.vocab_size, tok.vocab_size());
        assert_eq!(cfg.pad_token_id, Some(0));
        assert_eq!(cfg.hidden_size, 32);
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let mut v = tiny();
        v["num_attention_heads"] = 5.into();
        let e = read_scratch_config(config(v).path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not divisible"), "{e}");
        let mut v = tiny();
        v["hidden_act"] = "swoosh".into();
        let e = read_scratch_config(config(v).path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown activation 'swoosh'"), "{e}");
        let mut v = tiny();
        v["model_type"] = "gpt2".into();
        let e = read_scratch_config(config(v).path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an encoder"), "{e}");
        let e = read_scratch_config(config(serde_json::json!([1])).path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("JSON object"), "{e}");
        let f = config(tiny());
        let e = scratch_encoder(f.path(), &["", " "], &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
