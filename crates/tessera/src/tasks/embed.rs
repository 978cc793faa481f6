//! Sentence embeddings: a BERT encoder followed by the pooling that the model's
//! sentence-transformers files declare (`modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`): CLS, mean, max or mean-sqrt-len pooling over the real tokens,
//! optionally L2-normalized.

use super::{encoder_tokenizer, length_buckets};
use crate::models::encoder::Packed;
use crate::models::Transformer;
use crate::{Error, Result};
use candle_core::{DType, Device};
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

/// Pool the hidden states of a packed batch (N rows of width C, sequence i at rows
/// `offsets[i]..offsets[i + 1]`) into one vector per sequence: the poolings side by side
/// (C each), as sentence-transformers' `Pooling` computes them over the real tokens.
pub fn pool(hidden: &[f32], c: usize, offsets: &[usize], poolings: &[Pooling]) -> Vec<Vec<f32>> {
    offsets
        .windows(2)
        .map(|w| {
            let rows = &hidden[w[0] * c..w[1] * c];
            let n = (w[1] - w[0]).max(1);
            let mut out = Vec::with_capacity(c * poolings.len());
            for p in poolings {
                match p {
                    Pooling::Cls => out.extend_from_slice(&rows[..c]),
                    Pooling::Max => out.extend((0..c).map(|j| {
                        rows.chunks(c)
                            .map(|r| r[j])
                            .fold(f32::NEG_INFINITY, f32::max)
                    })),
                    Pooling::Mean | Pooling::MeanSqrtLen => {
                        let mut sum = vec![0f64; c];
                        for r in rows.chunks(c) {
                            for (s, &x) in sum.iter_mut().zip(r) {
                                *s += x as f64;
                            }
                        }
                        let div = match p {
                            Pooling::Mean => n as f64,
                            _ => (n as f64).sqrt(),
                        };
                        out.extend(sum.iter().map(|s| (s / div) as f32));
                    }
                }
            }
            out
        })
        .collect()
}

/// A sentence-embedding model.
pub struct Embedder {
    pub model: Transformer,
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
        let model = Transformer::load_dir(dir, DType::F32, device)?;
        model.cfg.require_encoder("embedding")?;
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

    /// One batch, packed without padding -> one vector per sequence.
    fn embed_batch(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::Input("cannot embed an empty token sequence".into()));
        }
        let packed = Packed::new(seqs, self.model.device())?;
        let hidden = self.model.encode_packed(&packed, None)?; // (N, C)
        let c = hidden.dim(1)?;
        let flat = hidden
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut v = pool(&flat, c, &packed.offsets, &self.cfg.poolings);
        if self.cfg.normalize {
            for row in v.iter_mut() {
                let norm = row
                    .iter()
                    .map(|&x| x as f64 * x as f64)
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
            }
        }
        Ok(v)
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
