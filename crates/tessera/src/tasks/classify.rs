//! An encoder with a classification head, in Hugging Face's layout:
//!
//! - sequence classification (`BertForSequenceClassification`):
//!   `logits = classifier(dropout(tanh(pooler(h[:, 0]))))`, (B, L);
//! - token classification (`BertForTokenClassification`): `logits = classifier(dropout(h))`, (B, T, L).
//!
//! Saved as `config.json` (with `id2label` / `label2id`), `model.safetensors` (`bert.*`,
//! `classifier.*` names) and `tokenizer.json`, so transformers loads the directory unchanged.

use super::{encoder_tokenizer, Truncation};
use crate::models::encoder::{
    bert_param_specs, detect_prefix, load_float_tensors, BlockDropout, Packed,
};
use crate::models::params::{Init, ParamSpec};
use crate::models::{ParamStore, Transformer, TransformerConfig};
use crate::nn::{Dropout, Linear};
use crate::util::rng::Rng;
use crate::weights::safetensors::safetensors_bytes;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// Which head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// One label per text (pooled `[CLS]`).
    Sequence,
    /// One label per token.
    Token,
}

impl HeadKind {
    /// The transformers class name.
    pub fn architecture(self) -> &'static str {
        match self {
            HeadKind::Sequence => "BertForSequenceClassification",
            HeadKind::Token => "BertForTokenClassification",
        }
    }
}

/// An encoder with a classification head and its tokenizer.
pub struct Classifier {
    pub kind: HeadKind,
    pub cfg: TransformerConfig,
    /// Label names, index = class id.
    pub labels: Vec<String>,
    /// Longest input in tokens (special tokens included).
    pub max_len: usize,
    pub bert: Transformer,
    /// (L, C) + (L)
    pub classifier: Linear,
    pub tokenizer: tokenizers::Tokenizer,
    /// Which tokens of an over-long text are kept (sequence heads; token heads keep the head).
    truncation: Truncation,
    /// The tokenizer without truncation, for [`Truncation::Tail`] / [`Truncation::HeadTail`].
    untruncated: Option<tokenizers::Tokenizer>,
    /// The tokenizer file's text, saved unchanged with the model.
    tokenizer_json: String,
}

/// Every trainable parameter of the model with a head of `n_labels` outputs.
pub fn head_param_specs(
    cfg: &TransformerConfig,
    kind: HeadKind,
    n_labels: usize,
) -> Vec<ParamSpec> {
    let mut specs = bert_param_specs(cfg, "bert.", kind == HeadKind::Sequence);
    let c = cfg.hidden_size;
    specs.push(ParamSpec {
        name: "classifier.weight".into(),
        shape: vec![n_labels, c],
        init: Init::Normal(cfg.initializer_range),
        decay: true,
    });
    specs.push(ParamSpec {
        name: "classifier.bias".into(),
        shape: vec![n_labels],
        init: Init::Zeros,
        decay: false,
    });
    specs
}

impl Classifier {
    /// Fresh trainable parameters of an encoder with a head of `n_labels`, for training from
    /// scratch: BERT's initialization (normal(0, `initializer_range`) for embeddings and
    /// projections, LayerNorm weight 1 and bias 0, biases 0, the padding row of the word
    /// embeddings 0), drawn from `rng`.
    pub fn init_scratch(
        cfg: &TransformerConfig,
        kind: HeadKind,
        n_labels: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<ParamStore> {
        cfg.validate()?;
        let specs = head_param_specs(cfg, kind, n_labels);
        let mut vars = Vec::with_capacity(specs.len());
        for s in &specs {
            let mut t = s.init_tensor(rng, device)?;
            let pad = cfg.pad_token_id.map_or(usize::MAX, |p| p as usize);
            if s.name.ends_with("word_embeddings.weight") && pad < cfg.vocab_size {
                let (v, c) = t.dims2()?;
                let p = pad;
                let zero = Tensor::zeros((1, c), DType::F32, device)?;
                let mut parts = Vec::with_capacity(3);
                if p > 0 {
                    parts.push(t.narrow(0, 0, p)?);
                }
                parts.push(zero);
                if p + 1 < v {
                    parts.push(t.narrow(0, p + 1, v - p - 1)?);
                }
                t = Tensor::cat(&parts, 0)?; // (V, C), row `pad` zero
            }
            vars.push(Var::from_tensor(&t)?);
        }
        Ok(ParamStore { specs, vars })
    }

    /// Trainable parameters for fine-tuning the encoder in `dir` with a fresh head of `labels`
    /// (the pooler comes from the checkpoint when it has one; the rest is initialized from `rng`).
    pub fn init_params(
        dir: &Path,
        kind: HeadKind,
        n_labels: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<(TransformerConfig, ParamStore)> {
        let cfg = TransformerConfig::from_file(dir.join("config.json"))?;
        cfg.require_encoder("fine-tuning a classifier")?;
        let (tensors, st) = load_float_tensors(dir, DType::F32, device)?;
        let prefix = detect_prefix(&tensors);
        let specs = head_param_specs(&cfg, kind, n_labels);
        let mut vars = Vec::with_capacity(specs.len());
        for s in &specs {
            let src = s.name.strip_prefix("bert.").map(|n| format!("{prefix}{n}"));
            let t = match src.as_ref().and_then(|n| tensors.get(n)) {
                Some(t) if t.dims() == s.shape.as_slice() => t.clone(),
                Some(t) => {
                    return Err(Error::checkpoint(
                        &st,
                        format!(
                            "tensor '{}' has shape {:?}, expected {:?}",
                            s.name,
                            t.dims(),
                            s.shape
                        ),
                    ))
                }
                None if s.name.contains("pooler") || !s.name.starts_with("bert.") => {
                    s.init_tensor(rng, device)?
                }
                None => {
                    return Err(Error::checkpoint(
                        &st,
                        format!("missing tensor '{}'", src.unwrap_or_default()),
                    ))
                }
            };
            vars.push(Var::from_tensor(&t)?);
        }
        Ok((cfg, ParamStore { specs, vars }))
    }

    /// The model over `params` (gradients reach them).
    pub fn from_params(
        kind: HeadKind,
        cfg: &TransformerConfig,
        params: &ParamStore,
        labels: Vec<String>,
        max_len: usize,
        tokenizer_path: &Path,
    ) -> Result<Self> {
        let tokenizer_json = crate::error::read_text(tokenizer_path)?;
        let tokenizer = encoder_tokenizer(tokenizer_path, max_len)?;
        Self::from_tensors(
            kind,
            cfg,
            &params.tensors(),
            labels,
            max_len,
            tokenizer,
            tokenizer_json,
            Path::new("<parameters>"),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn from_tensors(
        kind: HeadKind,
        cfg: &TransformerConfig,
        t: &HashMap<String, Tensor>,
        labels: Vec<String>,
        max_len: usize,
        tokenizer: tokenizers::Tokenizer,
        tokenizer_json: String,
        path: &Path,
    ) -> Result<Self> {
        let bert = Transformer::from_tensors_prefixed(cfg, t, "bert.", path)?;
        if kind == HeadKind::Sequence && bert.pooler.is_none() {
            return Err(Error::checkpoint(
                path,
                "missing tensor 'bert.pooler.dense.weight'",
            ));
        }
        let shape = [labels.len(), cfg.hidden_size];
        let w = crate::models::params::fetch(t, "classifier.weight", &shape, path)?;
        let b = crate::models::params::fetch(t, "classifier.bias", &shape[..1], path)?;
        Ok(Classifier {
            kind,
            cfg: cfg.clone(),
            labels,
            max_len,
            bert,
            classifier: Linear::new(w, Some(b)),
            tokenizer,
            truncation: Truncation::Head,
            untruncated: None,
            tokenizer_json,
        })
    }

    /// Load a directory saved by [`Classifier::save`] (or by transformers).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = crate::error::read_text(&cfg_path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
        let cfg = TransformerConfig::from_hf_json(&v)
            .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
        cfg.require_encoder("a classifier")?;
        let arch = v["architectures"]
            .get(0)
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = match arch {
            "BertForSequenceClassification" => HeadKind::Sequence,
            "BertForTokenClassification" => HeadKind::Token,
            other => {
                return Err(Error::Config(format!(
                    "{}: architecture '{other}' is not a fine-tuned classifier (BertForSequenceClassification or BertForTokenClassification)",
                    cfg_path.display()
                )))
            }
        };
        let id2label = v["id2label"]
            .as_object()
            .ok_or_else(|| Error::Config(format!("{}: missing id2label", cfg_path.display())))?;
        let mut labels = vec![String::new(); id2label.len()];
        for (k, l) in id2label {
            let i: usize = k
                .parse()
                .map_err(|_| Error::Config(format!("id2label key '{k}' is not an index")))?;
            let slot = labels
                .get_mut(i)
                .ok_or_else(|| Error::Config(format!("id2label index {i} out of range")))?;
            *slot = l.as_str().unwrap_or_default().to_string();
        }
        let max_len = v["tessera_max_length"]
            .as_u64()
            .map(|x| x as usize)
            .unwrap_or(cfg.max_position_embeddings);
        let (tensors, st) = load_float_tensors(dir, DType::F32, device)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = encoder_tokenizer(&tok_path, max_len)?;
        let tokenizer_json = crate::error::read_text(&tok_path)?;
        let truncation = match v["tessera_truncation"].as_str() {
            Some(t) => t
                .parse()
                .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?,
            None => Truncation::Head,
        };
        Self::from_tensors(
            kind,
            &cfg,
            &tensors,
            labels,
            max_len,
            tokenizer,
            tokenizer_json,
            &st,
        )?
        .with_truncation(truncation)
    }

    /// Which part of an over-long text [`Classifier::encode`] keeps.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// Keep `truncation`'s part of over-long texts (sequence heads only: a token head labels
    /// the words it sees, so it keeps the head).
    pub fn with_truncation(mut self, truncation: Truncation) -> Result<Self> {
        if truncation != Truncation::Head && self.kind != HeadKind::Sequence {
            return Err(Error::Input(format!(
                "truncation '{}' applies to text classification only; token classification keeps the first tokens",
                truncation.as_str()
            )));
        }
        self.untruncated = match truncation {
            Truncation::Head => None,
            _ => {
                let mut t = self.tokenizer.clone();
                t.with_truncation(None)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                Some(t)
            }
        };
        self.truncation = truncation;
        Ok(self)
    }

    /// Write `config.json`, `model.safetensors` and `tokenizer.json` of `params` into `dir`.
    pub fn save(&self, dir: &Path, params: &ParamStore) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut cfg = self.cfg.to_hf_json();
        let id2label: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), json!(l)))
            .collect();
        let label2id: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), json!(i)))
            .collect();
        cfg["architectures"] = json!([self.kind.architecture()]);
        cfg["id2label"] = Value::Object(id2label);
        cfg["label2id"] = Value::Object(label2id);
        cfg["tessera_max_length"] = json!(self.max_len);
        if self.truncation != Truncation::Head {
            cfg["tessera_truncation"] = json!(self.truncation.as_str());
        }
        if self.kind == HeadKind::Sequence {
            cfg["problem_type"] = json!("single_label_classification");
        }
        let named: Vec<(String, Tensor)> = params
            .specs
            .iter()
            .zip(&params.vars)
            .map(|(s, v)| (s.name.clone(), v.as_tensor().clone()))
            .collect();
        crate::util::fs::write_atomic(&dir.join("model.safetensors"), &safetensors_bytes(&named)?)?;
        crate::util::fs::write_atomic(&dir.join("tokenizer.json"), self.tokenizer_json.as_bytes())?;
        crate::util::fs::write_atomic(
            &dir.join("config.json"),
            serde_json::to_string_pretty(&cfg)?.as_bytes(),
        )
    }

    /// Logits: ids (B, T), attention mask (B, T) -> (B, L) for a sequence head, (B, T, L) for a
    /// token head. Dropout while training when `drop` is given.
    pub fn logits(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let h = self
            .bert
            .encode(ids, Some(mask), None, drop.as_deref_mut())?; // (B, T, C)
        let x = match self.kind {
            HeadKind::Sequence => self.bert.pool(&h)?, // (B, C)
            HeadKind::Token => h,
        };
        let x = match drop {
            Some(d) => Dropout {
                p: d.hidden,
                rng: &mut *d.rng,
            }
            .apply(&x)?,
            None => x,
        };
        Ok(self.classifier.forward(&x)?)
    }

    /// Logits of a packed batch (no padding computed): (B, L) for a sequence head; for a token
    /// head (R, L) at the packed rows `rows` (all N rows when none). Dropout while training when
    /// `drop` is given.
    pub fn logits_packed(
        &self,
        packed: &Packed,
        rows: Option<&Tensor>,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let h = self.bert.encode_packed(packed, drop.as_deref_mut())?; // (N, C)
        let x = match (self.kind, rows) {
            (HeadKind::Sequence, _) => self.bert.pool_packed(&h, packed)?, // (B, C)
            (HeadKind::Token, Some(r)) => h.index_select(r, 0)?,           // (R, C)
            (HeadKind::Token, None) => h,
        };
        let x = match drop {
            Some(d) => Dropout {
                p: d.hidden,
                rng: &mut *d.rng,
            }
            .apply(&x)?,
            None => x,
        };
        Ok(self.classifier.forward(&x)?)
    }

    /// Token ids of `text`, cut to `max_len` as [`Classifier::truncation`] says.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.untruncated.as_ref().unwrap_or(&self.tokenizer);
        let enc = tok
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(self.truncation.apply(enc.get_ids(), self.max_len))
    }

    /// Class probabilities of each text (softmax over the labels), in order.
    pub fn predict(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        if self.kind != HeadKind::Sequence {
            return Err(Error::Input(
                "this model tags tokens; use it for NER, not text classification".into(),
            ));
        }
        let ids = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut out = vec![Vec::new(); ids.len()];
        for bucket in super::length_buckets(&lens, batch_size) {
            let seqs: Vec<&[u32]> = bucket.iter().map(|&i| ids[i].as_slice()).collect();
            let packed = Packed::new(&seqs, self.bert.device())?;
            let logits = self.logits_packed(&packed, None, None)?;
            let p = crate::nn::loss::softmax(&logits)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (&i, row) in bucket.iter().zip(p) {
                out[i] = row;
            }
        }
        Ok(out)
    }
}
