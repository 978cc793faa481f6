//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`).
//!
//! Two vocabulary kinds:
//! - `gpt2`: byte-level BPE with the file's `merges`; the pre-tokenizer (how text is split before
//!   BPE) is chosen by `tokenizer.ggml.pre`, as llama.cpp does.
//! - `llama`: SentencePiece-style BPE: pieces with scores (a higher score merges first), `▁` for
//!   spaces, a space prefixed to the text, `<0xXX>` byte tokens for anything not in the vocabulary.
//!
//! Token types (`tokenizer.ggml.token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte. Control and unknown tokens become special added tokens (matched in text, as
//! the reference libraries do); user-defined ones become plain added tokens.

use super::Tokenizer;
use crate::weights::Gguf;
use crate::{Error, Result};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// Token type: an ordinary piece.
pub const TOKEN_NORMAL: i128 = 1;
/// Token type: the unknown token.
pub const TOKEN_UNKNOWN: i128 = 2;
/// Token type: a control token (BOS, EOS, turn markers).
pub const TOKEN_CONTROL: i128 = 3;
/// Token type: a user-defined token, matched as a whole in text.
pub const TOKEN_USER_DEFINED: i128 = 4;
/// Token type: a byte token `<0xXX>`.
pub const TOKEN_BYTE: i128 = 6;

/// Llama 3's split (numbers in groups of up to three, case-insensitive contractions).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split (like Llama 3's, single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer read from a GGUF file, with the special-token facts the file records.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// The tokenizer itself.
    pub tokenizer: Tokenizer,
    /// `tokenizer.ggml.model` (`gpt2` or `llama`).
    pub model: String,
    /// `tokenizer.ggml.pre`, when present.
    pub pre: Option<String>,
    /// Beginning-of-sequence id.
    pub bos_id: Option<u32>,
    /// End-of-sequence id.
    pub eos_id: Option<u32>,
    /// Padding id.
    pub pad_id: Option<u32>,
    /// Unknown-token id.
    pub unk_id: Option<u32>,
    /// Whether a BOS id should start every sequence (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Whether an EOS id should end every sequence (`tokenizer.ggml.add_eos_token`).
    pub add_eos: bool,
    /// The model's Jinja chat template (`tokenizer.chat_template`).
    pub chat_template: Option<String>,
}

impl GgufTokenizer {
    /// Build the tokenizer described by the metadata of `g`.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g
            .get_str("tokenizer.ggml.model")?
            .ok_or_else(|| g.error("no tokenizer in this file (missing 'tokenizer.ggml.model')"))?
            .to_string();
        let tokens = g
            .get_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| g.error("missing 'tokenizer.ggml.tokens'"))?
            .strings()
            .ok_or_else(|| g.error("'tokenizer.ggml.tokens' must be an array of strings"))?;
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(g.error(format!(
                "'tokenizer.ggml.tokens' has {} entries",
                tokens.len()
            )));
        }
        let n = tokens.len();
        let types = match g.get_array("tokenizer.ggml.token_type")? {
            None => vec![TOKEN_NORMAL; n],
            Some(a) => a.ints().filter(|t| t.len() == n).ok_or_else(|| {
                g.error(format!(
                    "'tokenizer.ggml.token_type' must be {n} integers (one per token), got {} {}",
                    a.len(),
                    a.elem_type.name()
                ))
            })?,
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match g.get_u64(key)? {
                None => Ok(None),
                Some(i) if (i as usize) < n => Ok(Some(i as u32)),
                Some(i) => Err(g.error(format!("'{key}' is {i}, outside the vocabulary of {n}"))),
            }
        };
        let bos_id = id("tokenizer.ggml.bos_token_id")?;
        let eos_id = id("tokenizer.ggml.eos_token_id")?;
        let pad_id = id("tokenizer.ggml.padding_token_id")?;
        let unk_id = id("tokenizer.ggml.unknown_token_id")?;
        let pre = g.get_str("tokenizer.ggml.pre")?.map(str::to_string);
        let mut inner = match model.as_str() {
            "gpt2" => byte_level_bpe(g, &tokens, pre.as_deref())?,
            "llama" => sentencepiece_bpe(g, &tokens, &types, unk_id)?,
            other => {
                return Err(g.error(format!(
                    "unsupported tokenizer model '{other}' (supported: gpt2, llama)"
                )))
            }
        };
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| matches!(t, TOKEN_CONTROL | TOKEN_UNKNOWN | TOKEN_USER_DEFINED))
            .filter(|(tok, _)| !tok.is_empty())
            .map(|(tok, &t)| {
                AddedToken::from(tok.to_string(), t != TOKEN_USER_DEFINED).normalized(false)
            })
            .collect();
        inner.add_special_tokens(&added);
        let add_bos = g
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(model == "llama");
        let add_eos = g.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let chat_template = g.get_str("tokenizer.chat_template")?.map(str::to_string);
        Ok(GgufTokenizer {
            tokenizer: Tokenizer::from_inner(inner),
            model,
            pre,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            add_bos,
            add_eos,
            chat_template,
        })
    }

    /// Open a GGUF file and build its tokenizer.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?)
    }

    fn token_text(&self, id: Option<u32>) -> Option<String> {
        id.and_then(|i| self.tokenizer.inner().id_to_token(i))
    }

    /// Text of the BOS token (for chat templates' `bos_token`).
    pub fn bos_token(&self) -> Option<String> {
        self.token_text(self.bos_id)
    }

    /// Text of the EOS token (for chat templates' `eos_token`).
    pub fn eos_token(&self) -> Option<String> {
        self.token_text(self.eos_id)
    }
}

fn tk(g: &Gguf, e: impl std::fmt::Display) -> Error {
    g.error(format!("building the tokenizer: {e}"))
}

/// token → id; a repeated token keeps its first id.
fn vocab_of(tokens: &[&str]) -> Vocab {
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(i as u32);
    }
    vocab
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` = `pre`.
fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizerWrapper, String> {
    let split = |re: &str| -> Result<PreTokenizerWrapper, String> {
        Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(Into::into)
        .map_err(|e| e.to_string())
    };
    // With `use_regex`, ByteLevel applies the GPT-2 split itself; otherwise it only maps bytes.
    let bytes =
        |gpt2_split: bool| PreTokenizerWrapper::from(ByteLevel::new(false, true, gpt2_split));
    Ok(match pre.unwrap_or("default") {
        "default" | "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" => bytes(true),
        // Each digit on its own, then the GPT-2 split.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            PreSequence::new(vec![split(r"\p{N}")?, bytes(true)]).into()
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "pixtral" => {
            PreSequence::new(vec![split(LLAMA3_SPLIT)?, bytes(false)]).into()
        }
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" | "hunyuan" => {
            PreSequence::new(vec![split(QWEN2_SPLIT)?, bytes(false)]).into()
        }
        other => {
            return Err(format!(
                "unsupported pre-tokenizer 'tokenizer.ggml.pre' = '{other}' (supported: default, gpt-2, \
                 smollm, starcoder, refact, command-r, llama-bpe, qwen2, ...)"
            ))
        }
    })
}

fn byte_level_bpe(g: &Gguf, tokens: &[&str], pre: Option<&str>) -> Result<tokenizers::Tokenizer> {
    let merges_raw = g
        .get_array("tokenizer.ggml.merges")?
        .ok_or_else(|| g.error("a gpt2 tokenizer needs 'tokenizer.ggml.merges'"))?
        .strings()
        .ok_or_else(|| g.error("'tokenizer.ggml.merges' must be an array of strings"))?;
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            g.error(format!(
                "'tokenizer.ggml.merges'[{i}] = {m:?} is not two pieces separated by a space"
            ))
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges)
        .build()
        .map_err(|e| tk(g, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer(pre).map_err(|e| g.error(e))?));
    inner.with_decoder(Some(ByteLevel::new(false, true, true)));
    Ok(inner)
}

/// SentencePiece-style vocabulary as a BPE: merging `a`+`b` ranks by the score of the merged
/// piece (higher first), which is how llama.cpp's SPM tokenizer picks its next merge.
fn sentencepiece_bpe(
    g: &Gguf,
    tokens: &[&str],
    types: &[i128],
    unk_id: Option<u32>,
) -> Result<tokenizers::Tokenizer> {
    let n = tokens.len();
    let scores = match g.get_array("tokenizer.ggml.scores")? {
        None => vec![0.0; n],
        Some(a) => a.f64s().filter(|s| s.len() == n).ok_or_else(|| {
            g.error(format!(
                "'tokenizer.ggml.scores' must be {n} numbers (one per token)"
            ))
        })?,
    };
    let vocab = vocab_of(tokens);
    // Candidate merges: every split of a mergeable piece into two pieces of the vocabulary.
    let mut ranked: Vec<(f64, u32, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if !matches!(types[i], TOKEN_NORMAL | TOKEN_USER_DEFINED) {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((scores[i], i as u32, a.to_string(), b.to_string()));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = ranked.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(u) = unk_id {
        builder = builder.unk_token(tokens[u as usize].to_string());
    }
    let bpe = builder.build().map_err(|e| tk(g, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let add_space = g
        .get_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let replace = Replace::new(" ", "▁").map_err(|e| tk(g, e))?;
    let normalizer = if add_space {
        NormalizerSequence::new(vec![Prepend::new("▁".into()).into(), replace.into()])
    } else {
        NormalizerSequence::new(vec![replace.into()])
    };
    inner.with_normalizer(Some(normalizer));
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(|e| tk(g, e))?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}
