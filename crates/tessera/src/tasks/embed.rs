//! Sentence embeddings: a BERT encoder followed by the pooling that the model's
//! sentence-transformers files declare (`modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`): CLS, mean, max or mean-sqrt-len pooling over the real tokens,
//! optionally L2-normalized.

use super::{encoder_tokenizer, length_buckets, pad_batch};
use crate::models::encoder::Bert;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::Path;

/// A pooling mode of sentence-transformers' `Pooling` module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// Mean over the real tokens.
    Mean,
    /// Sum over the real tokens divided by the square root of their number.
    MeanSqrtLen,
}

/// How token states become one sentence vector.
#[derive(Clone, Debug, PartialEq)]
pub struct SentenceConfig {
    /// Pooling modes, concatenated in sentence-transformers' order (CLS, max, mean, mean-sqrt-len).
    pub poolings: Vec<Pooling>,
    /// L2-normalize the pooled vector (a `Normalize` module in `modules.json`).
    pub normalize: bool,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are truncated.
    pub max_seq_length: usize,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = crate::error::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

impl SentenceConfig {
    /// Read the sentence-transformers files of `dir`. Without `modules.json` (a plain BERT
    /// directory): mean pooling, no normalization. `max_seq_length` comes from
    /// `sentence_bert_config.json`, else the model's position table.
    pub fn from_dir(dir: &Path, max_positions: usize) -> Result<Self> {
        let mut cfg = SentenceConfig {
            poolings: vec![Pooling::Mean],
            normalize: false,
            max_seq_length: max_positions,
        };
        let sb = dir.join("sentence_bert_config.json");
        if sb.exists() {
            if let Some(n) = read_json(&sb)?
                .get("max_seq_length")
                .and_then(Value::as_u64)
            {
                cfg.max_seq_length = (n as usize).min(max_positions);
            }
        }
        let modules = dir.join("modules.json");
        if !modules.exists() {
            return Ok(cfg);
        }
        let list = read_json(&modules)?;
        let list = list.as_array().ok_or_else(|| {
            Error::Config(format!(
                "{}: expected a JSON list of modules",
                modules.display()
            ))
        })?;
        for m in list {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
            let sub = m.get("path").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with(".Pooling") {
                cfg.poolings = read_pooling(&dir.join(sub).join("config.json"))?;
            } else if kind.ends_with(".Normalize") {
                cfg.normalize = true;
            } else if !kind.ends_with(".Transformer") {
                return Err(Error::Config(format!(
                    "{}: unsupported sentence-transformers module '{kind}'",
                    modules.display()
                )));
            }
        }
        if cfg.max_seq_length < 2 {
            return Err(Error::Config("max_seq_length must be at least 2".into()));
        }
        Ok(cfg)
    }
}

fn read_pooling(path: &Path) -> Result<Vec<Pooling>> {
    let v = read_json(path)?;
    let on = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    for k in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
        if on(k) {
            return Err(Error::Config(format!(
                "{}: '{k}' is not supported",
                path.display()
            )));
        }
    }
    let mut out = Vec::new();
    for (k, p) in [
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_max_tokens", Pooling::Max),
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
    ] {
        if on(k) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{}: no pooling mode is enabled",
            path.display()
        )));
    }
    Ok(out)
}

/// Pool hidden states (B, T, C) over the real tokens of `mask` (B, T) (1 = token) -> (B, k C),
/// one block of C per pooling mode.
pub fn pool(hidden: &Tensor, mask: &Tensor, poolings: &[Pooling]) -> Result<Tensor> {
    let (_b, _t, c) = hidden.dims3()?;
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?; // (B, T, 1)
    let count = m.sum(1)?.clamp(1e-9, f64::INFINITY)?; // (B, 1)
    let mut parts = Vec::with_capacity(poolings.len());
    for p in poolings {
        parts.push(match p {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                // Padding set to -1e9 first, as sentence-transformers does.
                let neg = ((m.ones_like()? - &m)? * -1e9)?; // (B, T, 1)
                hidden.broadcast_mul(&m)?.broadcast_add(&neg)?.max(1)?
            }
            Pooling::Mean => hidden.broadcast_mul(&m)?.sum(1)?.broadcast_div(&count)?,
            Pooling::MeanSqrtLen => hidden
                .broadcast_mul(&m)?
                .sum(1)?
                .broadcast_div(&count.sqrt()?)?,
        });
    }
    let out = Tensor::cat(&parts, 1)?;
    debug_assert_eq!(out.dim(1)?, c * poolings.len());
    Ok(out)
}

/// `x / max(||x||, 1e-12)` per row of (B, D).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?; // (B, 1)
    Ok(x.broadcast_div(&n)?)
}

/// A sentence-embedding model.
pub struct Embedder {
    pub model: Bert,
    pub cfg: SentenceConfig,
    tokenizer: tokenizers::Tokenizer,
}

impl Embedder {
    /// Load a model directory (`config.json`, `model.safetensors`, `tokenizer.json` and the
    /// optional sentence-transformers files) in f32 on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Input(format!(
                "{}: not a model directory",
                dir.display()
            )));
        }
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !dir.join(f).exists() {
                return Err(Error::Input(format!(
                    "{}: missing {f} (a model directory needs config.json, model.safetensors and tokenizer.json)",
                    dir.display()
                )));
            }
        }
        let model = Bert::load_dir(dir, DType::F32, device)?;
        let cfg = SentenceConfig::from_dir(dir, model.cfg.max_position_embeddings)?;
        let tokenizer = encoder_tokenizer(&dir.join("tokenizer.json"), cfg.max_seq_length)?;
        Ok(Embedder {
            model,
            cfg,
            tokenizer,
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.model.cfg.hidden_size * self.cfg.poolings.len()
    }

    /// Token ids of each text (`[CLS]` … `[SEP]`, truncated at `max_seq_length`).
    pub fn encode_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Embeddings of `texts`, in order, computed in length-bucketed batches of `batch_size`.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let ids = self.encode_ids(texts)?;
        self.embed_ids(&ids, batch_size)
    }

    /// Embeddings of already tokenized inputs, in order.
    pub fn embed_ids(&self, ids: &[Vec<u32>], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(Error::Input("batch size must be at least 1".into()));
        }
        let lens: Vec<usize> = ids.iter().map(|s| s.len()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        for bucket in length_buckets(&lens, batch_size) {
            let seqs: Vec<&[u32]> = bucket.iter().map(|&i| ids[i].as_slice()).collect();
            let rows = self.embed_batch(&seqs)?;
            for (&i, row) in bucket.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    /// One padded batch -> one vector per sequence.
    fn embed_batch(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::Input("cannot embed an empty token sequence".into()));
        }
        let (ids, mask) = pad_batch(seqs, self.model.cfg.pad_token_id, self.model.device())?;
        let hidden = self.model.forward(&ids, Some(&mask), None, None)?; // (B, T, C)
        let mut v = pool(&hidden, &mask, &self.cfg.poolings)?; // (B, D)
        if self.cfg.normalize {
            v = l2_normalize(&v)?;
        }
        Ok(v.to_dtype(DType::F32)?.to_vec2()?)
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The `k` entries of `corpus` most similar to `query` by cosine: (index, score), best first.
pub fn top_k(query: &[f32], corpus: &[Vec<f32>], k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = corpus
        .iter()
        .enumerate()
        .map(|(i, v)| (i, cosine(query, v)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}
