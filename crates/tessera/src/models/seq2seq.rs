//! The encoder-decoder: two stacks of the one [`Transformer`], configured. The encoder is a
//! bidirectional stack (padding masked); the decoder a causal stack whose blocks fill the
//! cross-attention slot with the encoder's output. Embeddings are shared by both stacks and the
//! head (Marian's and T5's layout; a T5 file may carry its own head); the logits may carry a bias
//! (Marian's `final_logits_bias`), and the decoder's output may be scaled by d_model^-0.5 first
//! (original T5).
//!
//! ```text
//! memory = encoder(src, src_mask)                          (B, S, C)
//! h      = decoder(tgt_in, cross-attending to memory)      (B, T, C)
//! logits = (h · s) @ head^T + final_logits_bias            (B, T, V)   s = 1 or d_model^-0.5
//! ```
//!
//! Training is teacher forcing: the decoder reads `[start] y1 .. y(n-1)` and predicts `y1 .. yn
//! </s>`; padded target positions carry [`IGNORE`] and are left out of the loss (the rows are
//! selected before the head, so padding costs no head product).

use super::block::{BlockDropout, Memory};
use super::config::TransformerConfig;
use super::params::{param_specs_with, ParamSpec, ParamStore};
use super::Transformer;
use crate::nn::attention::padding_mask;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub use super::transformer::IGNORE;

/// Tensor-name prefixes of the two stacks of a Marian checkpoint (T5's: `encoder.`, `decoder.`;
/// see [`Seq2SeqConfig::prefixes`]).
pub const ENCODER_PREFIX: &str = "model.encoder.";
/// See [`ENCODER_PREFIX`].
pub const DECODER_PREFIX: &str = "model.decoder.";
/// The logits bias (Marian's buffer, (1, V)).
pub const LOGITS_BIAS: &str = "final_logits_bias";

/// An encoder-decoder: the two stacks and how decoding starts and ends.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Seq2SeqConfig {
    /// The encoder stack (bidirectional).
    pub encoder: TransformerConfig,
    /// The decoder stack (causal, with the cross-attention slot).
    pub decoder: TransformerConfig,
    /// The first decoder input (Marian: the pad token).
    pub decoder_start_token_id: u32,
    /// Forced as the last token when the length limit is reached (transformers'
    /// `forced_eos_token_id`).
    pub forced_eos_token_id: Option<u32>,
    /// The decoder's output is multiplied by d_model^-0.5 before the head (original T5).
    #[serde(default)]
    pub scale_decoder_outputs: bool,
}

impl Seq2SeqConfig {
    /// Parse a Hugging Face `config.json` (`model_type` `marian` or `t5`).
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let hf = super::config::HfConfig::parse(v)?;
        let cfg = match hf.model_type.as_deref() {
            Some("marian") => super::family::marian::config(&hf)?,
            Some("t5") => super::family::t5::config(&hf)?,
            Some(other) => {
                return Err(Error::Config(format!(
                    "model_type '{other}' is not an encoder-decoder tessera loads (expected \
                     \"marian\" or \"t5\")"
                )))
            }
            None => {
                return Err(Error::Config(
                    "missing 'model_type' (expected \"marian\" or \"t5\")".into(),
                ))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a `config.json` file (errors name the file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        super::config::read_config_file(path.as_ref(), Self::from_hf_json)
    }

    /// The Marian or T5 `config.json` of this model (pad, eos and bos ids included).
    pub fn to_hf_json(&self) -> Value {
        let mut v = match self.decoder.arch {
            super::config::Arch::T5 => super::family::t5::to_hf(self),
            _ => super::family::marian::to_hf(self),
        };
        let obj = v.as_object_mut().expect("object");
        obj.insert("torch_dtype".into(), Value::from("float32"));
        let d = &self.decoder;
        for (k, id) in [
            ("bos_token_id", d.bos_token_id),
            ("eos_token_id", d.eos_token_id),
            ("pad_token_id", d.pad_token_id),
        ] {
            obj.insert(k.into(), id.map_or(Value::Null, Value::from));
        }
        v
    }

    /// Check both stacks and that they fit together.
    pub fn validate(&self) -> Result<()> {
        use super::config::{Arch, AttentionKind};
        self.encoder.validate()?;
        self.decoder.validate()?;
        let (e, d) = (&self.encoder, &self.decoder);
        if e.attention != AttentionKind::Bidirectional || e.cross_attention {
            return Err(Error::Config(
                "the encoder of an encoder-decoder is bidirectional, without cross-attention"
                    .into(),
            ));
        }
        if d.attention != AttentionKind::Causal || !d.cross_attention {
            return Err(Error::Config(
                "the decoder of an encoder-decoder is causal, with cross-attention".into(),
            ));
        }
        if e.arch != d.arch || !matches!(e.arch, Arch::Marian | Arch::T5) {
            return Err(Error::Config(format!(
                "an encoder-decoder's stacks are both Marian or both T5 (encoder {:?}, decoder \
                 {:?})",
                e.arch, d.arch
            )));
        }
        if e.hidden_size != d.hidden_size || e.vocab_size != d.vocab_size {
            return Err(Error::Config(format!(
                "encoder and decoder must share the width and vocabulary (encoder {}x{}, decoder \
                 {}x{})",
                e.vocab_size, e.hidden_size, d.vocab_size, d.hidden_size
            )));
        }
        if self.decoder_start_token_id as usize >= d.vocab_size {
            return Err(Error::Config(format!(
                "decoder_start_token_id {} is outside the vocabulary of {}",
                self.decoder_start_token_id, d.vocab_size
            )));
        }
        Ok(())
    }

    /// The tensor-name prefixes of the encoder and decoder stacks.
    pub fn prefixes(&self) -> (&'static str, &'static str) {
        match self.decoder.arch {
            super::config::Arch::T5 => ("encoder.", "decoder."),
            _ => (ENCODER_PREFIX, DECODER_PREFIX),
        }
    }

    /// Every parameter of both stacks (the shared embedding once), in a fixed order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let (ep, dp) = self.prefixes();
        let mut specs = param_specs_with(&self.encoder, ep, false);
        let seen: std::collections::HashSet<String> =
            specs.iter().map(|s| s.name.clone()).collect();
        specs.extend(
            param_specs_with(&self.decoder, dp, false)
                .into_iter()
                .filter(|s| !seen.contains(&s.name)),
        );
        specs
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// The end-of-sequence id (decoding stops there).
    pub fn eos(&self) -> Result<u32> {
        self.decoder
            .eos_token_id
            .ok_or_else(|| Error::Config("the model has no eos_token_id".into()))
    }

    /// The padding id.
    pub fn pad(&self) -> Result<u32> {
        self.decoder
            .pad_token_id
            .ok_or_else(|| Error::Config("the model has no pad_token_id".into()))
    }
}

/// A batch of sentence pairs as tensors: sources right-padded with their mask, decoder inputs
/// (start token first) and targets ([`IGNORE`] at padding).
pub struct Seq2SeqBatch {
    /// (B, S) u32
    pub src: Tensor,
    /// (B, S) u32: 1 = token, 0 = padding.
    pub src_mask: Tensor,
    /// (B, T) u32
    pub tgt_in: Tensor,
    /// Targets of every decoder position (B·T), [`IGNORE`] at padding.
    pub targets: Vec<u32>,
    /// Real target tokens (the loss is their mean).
    pub tokens: usize,
}

/// Right-pad source id sequences into (B, S) ids and a (B, S) 0/1 mask (S at least 1); an empty
/// source becomes its end token alone (attention needs one key). Also each source's length as
/// encoded (at least 1).
pub fn pad_sources(
    srcs: &[&[u32]],
    pad: u32,
    eos: u32,
    device: &Device,
) -> Result<(Tensor, Tensor, Vec<usize>)> {
    let b = srcs.len();
    let s = srcs.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad; b * s];
    let mut mask = vec![0u32; b * s];
    let mut lens = Vec::with_capacity(b);
    for (i, x) in srcs.iter().enumerate() {
        ids[i * s..i * s + x.len()].copy_from_slice(x);
        mask[i * s..i * s + x.len()].fill(1);
        if x.is_empty() {
            ids[i * s] = eos;
            mask[i * s] = 1;
        }
        lens.push(x.len().max(1));
    }
    Ok((
        Tensor::from_vec(ids, (b, s), device)?,
        Tensor::from_vec(mask, (b, s), device)?,
        lens,
    ))
}

impl Seq2SeqBatch {
    /// Pad `pairs` (source ids, target ids without start or end) into a batch: the source as
    /// given, the decoder reading `start y..` and predicting `y.. eos`.
    pub fn new(
        pairs: &[(&[u32], &[u32])],
        pad: u32,
        start: u32,
        eos: u32,
        device: &Device,
    ) -> Result<Self> {
        let b = pairs.len();
        let t = pairs.iter().map(|p| p.1.len() + 1).max().unwrap_or(1);
        let srcs: Vec<&[u32]> = pairs.iter().map(|p| p.0).collect();
        let (src, src_mask, _) = pad_sources(&srcs, pad, eos, device)?;
        let mut tgt_in = vec![pad; b * t];
        let mut targets = vec![IGNORE; b * t];
        let mut tokens = 0;
        for (i, (_, y)) in pairs.iter().enumerate() {
            tgt_in[i * t] = start;
            tgt_in[i * t + 1..i * t + 1 + y.len()].copy_from_slice(y);
            targets[i * t..i * t + y.len()].copy_from_slice(y);
            targets[i * t + y.len()] = eos;
            tokens += y.len() + 1;
        }
        Ok(Seq2SeqBatch {
            src,
            src_mask,
            tgt_in: Tensor::from_vec(tgt_in, (b, t), device)?,
            targets,
            tokens,
        })
    }
}

/// An encoder-decoder built from a [`Seq2SeqConfig`].
#[derive(Clone, Debug)]
pub struct Seq2Seq {
    pub cfg: Seq2SeqConfig,
    pub encoder: Transformer,
    pub decoder: Transformer,
    /// (V,) added to every logit row; none = zeros.
    logits_bias: Option<Tensor>,
    /// The named tensors it was built from (sharing storage with the stacks' weights, and with
    /// the trained variables during training), for the inference backend.
    tensors: std::sync::Arc<HashMap<String, Tensor>>,
    source: std::path::PathBuf,
}

impl Seq2Seq {
    /// Build from named tensors (the family's names); `path` names the source in errors.
    pub fn from_tensors(
        cfg: &Seq2SeqConfig,
        t: &HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        let (ep, dp) = cfg.prefixes();
        let encoder = Transformer::from_tensors_prefixed(&cfg.encoder, t, ep, path)?;
        let decoder = Transformer::from_tensors_prefixed(&cfg.decoder, t, dp, path)?;
        let logits_bias = match t.get(LOGITS_BIAS) {
            Some(b) => {
                if b.elem_count() != cfg.decoder.vocab_size {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "'{LOGITS_BIAS}' has shape {:?}, expected [1, {}]",
                            b.dims(),
                            cfg.decoder.vocab_size
                        ),
                    ));
                }
                let b = b.flatten_all()?;
                // All zeros (a fresh model's): no bias, and the fused head + loss applies.
                let nonzero = b.abs()?.max(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()? > 0.0;
                nonzero.then_some(b)
            }
            None => None,
        };
        Ok(Seq2Seq {
            cfg: cfg.clone(),
            encoder,
            decoder,
            logits_bias,
            tensors: std::sync::Arc::new(t.clone()),
            source: path.to_path_buf(),
        })
    }

    /// The model over trainable parameters (gradients reach `params`).
    pub fn from_params(cfg: &Seq2SeqConfig, params: &ParamStore) -> Result<Self> {
        Self::from_tensors(cfg, &params.tensors(), Path::new("<parameters>"))
    }

    /// Load `config.json` + `model.safetensors` from a Hugging Face-layout directory. A T5 file
    /// with its own `lm_head.weight` gets an untied head.
    pub fn load_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let mut cfg = Seq2SeqConfig::from_file(dir.join("config.json"))?;
        let (tensors, st) = super::encoder::load_float_tensors(dir, dtype, device)?;
        if cfg.decoder.arch == super::config::Arch::T5 && tensors.contains_key("lm_head.weight") {
            cfg.decoder.tie_word_embeddings = false;
        }
        Self::from_tensors(&cfg, &tensors, &st)
    }

    /// The decoder stack as the inference backend ([`crate::infer::Decoder`]: f32 slices, a KV
    /// cache per sequence, the encoder output read through [`crate::infer::Decoder::set_memory`]),
    /// built from the current weights.
    pub fn inference_decoder(&self) -> Result<crate::infer::Decoder> {
        let mut d = crate::infer::Decoder::from_tensors_prefixed(
            &self.cfg.decoder,
            &self.tensors,
            self.cfg.prefixes().1,
            &self.source,
        )?;
        if let Some(b) = &self.logits_bias {
            d.set_logits_bias(b.to_dtype(DType::F32)?.to_vec1()?)?;
        }
        if let Some(s) = self.output_scale() {
            d.scale_output(s as f32)?;
        }
        Ok(d)
    }

    /// The logits bias as a `(1, V)` tensor for saving (zeros when the model has none).
    pub fn logits_bias_tensor(&self) -> Result<Tensor> {
        let v = self.cfg.decoder.vocab_size;
        Ok(match &self.logits_bias {
            Some(b) => b.reshape((1, v))?,
            None => Tensor::zeros((1, v), self.decoder.dtype(), self.decoder.device())?,
        })
    }

    /// The encoder's output for `src` (B, S) u32 with its mask (B, S) (1 = token).
    pub fn encode(
        &self,
        src: &Tensor,
        src_mask: &Tensor,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        self.encoder.encode(src, Some(src_mask), None, drop)
    }

    /// The additive key mask of a source mask, for [`Memory`].
    pub fn memory_mask(&self, src_mask: &Tensor) -> Result<Tensor> {
        Ok(padding_mask(src_mask)?.to_dtype(self.decoder.dtype())?)
    }

    /// The decoder's final hidden states for `tgt_in` (B, T) reading `memory`.
    pub fn decode_hidden(
        &self,
        tgt_in: &Tensor,
        memory: Memory<'_>,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        self.decoder.forward_hidden_with(tgt_in, Some(memory), drop)
    }

    /// The factor on the decoder's output before the head (d_model^-0.5 for original T5).
    fn output_scale(&self) -> Option<f64> {
        self.cfg
            .scale_decoder_outputs
            .then(|| (self.cfg.decoder.hidden_size as f64).powf(-0.5))
    }

    /// The decoder's output as the head reads it (scaled when the model says so).
    fn head_input(&self, h: &Tensor) -> Result<Tensor> {
        Ok(match self.output_scale() {
            Some(s) => (h * s)?,
            None => h.clone(),
        })
    }

    /// Hidden (..., C) -> logits (..., V), the bias added.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let logits = self.decoder.head(&self.head_input(h)?)?;
        Ok(match &self.logits_bias {
            Some(b) => logits.broadcast_add(b)?,
            None => logits,
        })
    }

    /// Logits of every decoder position: (B, T, V).
    pub fn forward(&self, src: &Tensor, src_mask: &Tensor, tgt_in: &Tensor) -> Result<Tensor> {
        let memory = self.encode(src, src_mask, None)?;
        let mask = self.memory_mask(src_mask)?;
        let h = self.decode_hidden(
            tgt_in,
            Memory {
                states: &memory,
                mask: Some(&mask),
            },
            None,
        )?;
        self.logits(&h)
    }

    /// Mean (label-smoothed) cross-entropy over the batch's real target tokens; `drop`, when
    /// given, runs dropout in both stacks (one generator, encoder first).
    pub fn loss(
        &self,
        batch: &Seq2SeqBatch,
        smoothing: f64,
        mut drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let memory = self.encode(&batch.src, &batch.src_mask, drop.as_deref_mut())?;
        let mask = self.memory_mask(&batch.src_mask)?;
        let h = self.decode_hidden(
            &batch.tgt_in,
            Memory {
                states: &memory,
                mask: Some(&mask),
            },
            drop,
        )?;
        let sel = super::transformer::TargetRows::select(&h, &batch.targets)?;
        let (h, y) = (&sel.hidden, sel.targets_tensor()?);
        let w = self.decoder.head_weight();
        if self.logits_bias.is_none()
            && crate::kernels::applicable(h)
            && w.dtype() == h.dtype()
            && w.device().is_cpu()
        {
            // Head and loss as one op: the logits never enter the autograd graph.
            return Ok(
                crate::kernels::cross_entropy::linear_cross_entropy_smoothed(
                    &self.head_input(h)?,
                    w,
                    &y,
                    smoothing,
                )?,
            );
        }
        let logits = self.logits(h)?;
        Ok(crate::nn::loss::smoothed_cross_entropy(
            &logits, &y, smoothing,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shifts_targets_and_ignores_padding() {
        let dev = Device::Cpu;
        let (pad, start, eos) = (9, 9, 0);
        let b = Seq2SeqBatch::new(
            &[(&[1, 2, 3], &[4, 5]), (&[6], &[7])],
            pad,
            start,
            eos,
            &dev,
        )
        .unwrap();
        assert_eq!(b.src.to_vec2::<u32>().unwrap(), [[1, 2, 3], [6, 9, 9]]);
        assert_eq!(b.src_mask.to_vec2::<u32>().unwrap(), [[1, 1, 1], [1, 0, 0]]);
        assert_eq!(b.tgt_in.to_vec2::<u32>().unwrap(), [[9, 4, 5], [9, 7, 9]]);
        assert_eq!(b.targets, [4, 5, 0, 7, 0, IGNORE]);
        assert_eq!(b.tokens, 5);
        // An empty source attends to its end token; an empty target still predicts the end.
        let e = Seq2SeqBatch::new(&[(&[], &[])], pad, start, eos, &dev).unwrap();
        assert_eq!(e.src.to_vec2::<u32>().unwrap(), [[0]]);
        assert_eq!(e.src_mask.to_vec2::<u32>().unwrap(), [[1]]);
        assert_eq!(e.targets, [0]);
    }
}
