//! BERT-family encoder: word + token-type + absolute position embeddings, N post-norm blocks of
//! bidirectional self-attention and a GELU MLP.
//!
//! ```text
//! x = LN(word[ids] + pos[0..T] + type[type_ids])
//! for each block:  x = LN1(x + attn(x, mask));  x = LN2(x + mlp(x))
//! ```
//!
//! Built from the same [`Block`] as the decoder (post-norm, bidirectional [`Mixing`]);
//! tensor names are the Hugging Face `BertModel` names, optionally under a prefix (`bert.` in
//! `BertForSequenceClassification` / `BertForTokenClassification` checkpoints).

pub use super::block::BlockDropout;
use super::block::{Block, NormPlacement};
use super::config::Activation;
use super::params::{fetch, Init, ParamSpec};
use crate::nn::attention::{padding_mask, QkvProj};
use crate::nn::{Attention, Linear, Mixing, Mlp, Norm};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// A BERT configuration with Hugging Face `config.json` names.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// V: vocabulary size (`vocab_size`).
    pub vocab_size: usize,
    /// C: hidden width (`hidden_size`).
    pub hidden_size: usize,
    /// Number of blocks (`num_hidden_layers`).
    pub num_layers: usize,
    /// H: attention heads (`num_attention_heads`).
    pub num_heads: usize,
    /// I: MLP inner width (`intermediate_size`).
    pub intermediate_size: usize,
    /// Size of the position table (`max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// Number of token types (`type_vocab_size`).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (`layer_norm_eps`, 1e-12 in BERT).
    pub layer_norm_eps: f64,
    /// MLP activation (`hidden_act`; BERT uses exact-erf `gelu`).
    pub activation: Activation,
    /// Dropout on embeddings and residual branches while training (`hidden_dropout_prob`).
    pub hidden_dropout: f32,
    /// Dropout on attention weights while training (`attention_probs_dropout_prob`).
    pub attention_dropout: f32,
    /// Standard deviation of the normal init (`initializer_range`).
    pub initializer_range: f64,
    /// Padding token id (`pad_token_id`).
    pub pad_token_id: u32,
}

fn get_usize(o: &Map<String, Value>, k: &str, default: Option<usize>) -> Result<usize> {
    match o.get(k) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| Error::Config(format!("BERT config: missing '{k}'")))
        }
        Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
            Error::Config(format!(
                "BERT config: '{k}' must be a non-negative integer, got {v}"
            ))
        }),
    }
}

fn get_f64(o: &Map<String, Value>, k: &str, default: f64) -> Result<f64> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| Error::Config(format!("BERT config: '{k}' must be a number, got {v}"))),
    }
}

impl BertConfig {
    /// Parse a Hugging Face BERT `config.json` value (`model_type` `bert`, absolute positions).
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let o = v
            .as_object()
            .ok_or_else(|| Error::Config("config.json must be a JSON object".into()))?;
        match o.get("model_type").and_then(Value::as_str) {
            Some("bert") | None => {}
            Some(other) => {
                return Err(Error::Config(format!(
                    "model_type '{other}' is not a BERT-layout encoder (expected \"bert\")"
                )))
            }
        }
        if let Some(p) = o.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(Error::Config(format!(
                    "position_embedding_type '{p}' is not supported (only \"absolute\")"
                )));
            }
        }
        let act = o
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let cfg = BertConfig {
            vocab_size: get_usize(o, "vocab_size", None)?,
            hidden_size: get_usize(o, "hidden_size", None)?,
            num_layers: get_usize(o, "num_hidden_layers", None)?,
            num_heads: get_usize(o, "num_attention_heads", None)?,
            intermediate_size: get_usize(o, "intermediate_size", None)?,
            max_position_embeddings: get_usize(o, "max_position_embeddings", Some(512))?,
            type_vocab_size: get_usize(o, "type_vocab_size", Some(2))?,
            layer_norm_eps: get_f64(o, "layer_norm_eps", 1e-12)?,
            activation: Activation::parse(act)?,
            hidden_dropout: get_f64(o, "hidden_dropout_prob", 0.1)? as f32,
            attention_dropout: get_f64(o, "attention_probs_dropout_prob", 0.1)? as f32,
            initializer_range: get_f64(o, "initializer_range", 0.02)?,
            pad_token_id: get_usize(o, "pad_token_id", Some(0))? as u32,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::error::read_text(path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::from_hf_json(&v).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Check that the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        use super::limits::{self as lim, check};
        let c = self;
        let field = |e: Error| match e {
            Error::Config(m) => Error::Config(format!("BERT config: {m}")),
            e => e,
        };
        check("vocab_size", c.vocab_size, lim::MAX_VOCAB).map_err(field)?;
        check("hidden_size", c.hidden_size, lim::MAX_HIDDEN).map_err(field)?;
        check("num_hidden_layers", c.num_layers, lim::MAX_LAYERS).map_err(field)?;
        check("num_attention_heads", c.num_heads, lim::MAX_HEADS).map_err(field)?;
        check(
            "intermediate_size",
            c.intermediate_size,
            lim::MAX_INTERMEDIATE,
        )
        .map_err(field)?;
        check(
            "max_position_embeddings",
            c.max_position_embeddings,
            lim::MAX_CONTEXT,
        )
        .map_err(field)?;
        check("type_vocab_size", c.type_vocab_size, lim::MAX_TYPE_VOCAB).map_err(field)?;
        if c.vocab_size == 0
            || c.hidden_size == 0
            || c.num_layers == 0
            || c.num_heads == 0
            || c.intermediate_size == 0
            || c.max_position_embeddings == 0
            || c.type_vocab_size == 0
        {
            return Err(Error::Config(
                "BERT config: every size must be positive".into(),
            ));
        }
        if !c.hidden_size.is_multiple_of(c.num_heads) {
            return Err(Error::Config(format!(
                "BERT config: hidden_size {} is not divisible by num_attention_heads {}",
                c.hidden_size, c.num_heads
            )));
        }
        for (name, p) in [
            ("hidden_dropout_prob", c.hidden_dropout),
            ("attention_probs_dropout_prob", c.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Config(format!(
                    "BERT config: {name} must be in [0, 1), got {p}"
                )));
            }
        }
        if c.layer_norm_eps.is_nan() || c.layer_norm_eps <= 0.0 {
            return Err(Error::Config(
                "BERT config: layer_norm_eps must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The Hugging Face `config.json` object of a `BertModel` (heads add their own keys).
    pub fn to_hf_json(&self) -> Value {
        json!({
            "model_type": "bert",
            "architectures": ["BertModel"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.activation.hf_name(),
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "initializer_range": self.initializer_range,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
        })
    }
}

/// Every parameter of a `BertModel` under `prefix` (e.g. `""` or `"bert."`), pooler included
/// when `pooler`. Decay only on projection matrices.
pub fn bert_param_specs(cfg: &BertConfig, prefix: &str, pooler: bool) -> Vec<ParamSpec> {
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let std = cfg.initializer_range;
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init, decay: bool| {
        out.push(ParamSpec {
            name,
            shape,
            init,
            decay,
        })
    };
    let e = format!("{prefix}embeddings");
    push(
        format!("{e}.word_embeddings.weight"),
        vec![cfg.vocab_size, c],
        Init::Normal(std),
        false,
    );
    push(
        format!("{e}.position_embeddings.weight"),
        vec![cfg.max_position_embeddings, c],
        Init::Normal(std),
        false,
    );
    push(
        format!("{e}.token_type_embeddings.weight"),
        vec![cfg.type_vocab_size, c],
        Init::Normal(std),
        false,
    );
    push(format!("{e}.LayerNorm.weight"), vec![c], Init::Ones, false);
    push(format!("{e}.LayerNorm.bias"), vec![c], Init::Zeros, false);
    let linear =
        |push: &mut dyn FnMut(String, Vec<usize>, Init, bool), p: String, i: usize, o: usize| {
            push(format!("{p}.weight"), vec![o, i], Init::Normal(std), true);
            push(format!("{p}.bias"), vec![o], Init::Zeros, false);
        };
    for l in 0..cfg.num_layers {
        let p = format!("{prefix}encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            linear(&mut push, format!("{p}.attention.self.{part}"), c, c);
        }
        linear(&mut push, format!("{p}.attention.output.dense"), c, c);
        push(
            format!("{p}.attention.output.LayerNorm.weight"),
            vec![c],
            Init::Ones,
            false,
        );
        push(
            format!("{p}.attention.output.LayerNorm.bias"),
            vec![c],
            Init::Zeros,
            false,
        );
        linear(&mut push, format!("{p}.intermediate.dense"), c, i);
        linear(&mut push, format!("{p}.output.dense"), i, c);
        push(
            format!("{p}.output.LayerNorm.weight"),
            vec![c],
            Init::Ones,
            false,
        );
        push(
            format!("{p}.output.LayerNorm.bias"),
            vec![c],
            Init::Zeros,
            false,
        );
    }
    if pooler {
        linear(&mut push, format!("{prefix}pooler.dense"), c, c);
    }
    out
}

/// A BERT encoder (with its pooler when the checkpoint has one).
#[derive(Clone, Debug)]
pub struct Bert {
    pub cfg: BertConfig,
    /// (V, C)
    word: Tensor,
    /// (P, C)
    position: Tensor,
    /// (types, C)
    token_type: Tensor,
    emb_norm: Norm,
    blocks: Vec<Block>,
    /// `pooler.dense` (C -> C), applied with tanh to the first token.
    pub pooler: Option<Linear>,
}

/// The name prefix under which a checkpoint stores the encoder (`""` or `"bert."`).
pub fn detect_prefix(tensors: &HashMap<String, Tensor>) -> &'static str {
    if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

impl Bert {
    /// Build from named tensors (`BertModel` names under `prefix`); `path` names the source in
    /// errors. The pooler is loaded when present.
    pub fn from_tensors(
        cfg: &BertConfig,
        t: &HashMap<String, Tensor>,
        prefix: &str,
        path: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        let specs: HashMap<String, Vec<usize>> = bert_param_specs(cfg, prefix, true)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        let get = |name: String| -> Result<Tensor> {
            let shape = specs.get(&name).ok_or_else(|| {
                Error::checkpoint(path, format!("internal: no spec for '{name}'"))
            })?;
            fetch(t, &name, shape, path)
        };
        let linear = |p: String| -> Result<Linear> {
            Ok(Linear::new(
                get(format!("{p}.weight"))?,
                Some(get(format!("{p}.bias"))?),
            ))
        };
        let norm = |p: String| -> Result<Norm> {
            Ok(Norm::LayerNorm {
                weight: get(format!("{p}.weight"))?,
                bias: get(format!("{p}.bias"))?,
                eps: cfg.layer_norm_eps,
            })
        };
        let e = format!("{prefix}embeddings");
        let head_dim = cfg.hidden_size / cfg.num_heads;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("{prefix}encoder.layer.{l}");
            blocks.push(Block {
                placement: NormPlacement::Post,
                attn: Attention {
                    qkv: QkvProj::Split {
                        q: linear(format!("{p}.attention.self.query"))?,
                        k: linear(format!("{p}.attention.self.key"))?,
                        v: linear(format!("{p}.attention.self.value"))?,
                    },
                    out: linear(format!("{p}.attention.output.dense"))?,
                    num_heads: cfg.num_heads,
                    num_kv_heads: cfg.num_heads,
                    head_dim,
                },
                norm1: norm(format!("{p}.attention.output.LayerNorm"))?,
                cross: None,
                mlp: Mlp::Plain {
                    fc: linear(format!("{p}.intermediate.dense"))?,
                    proj: linear(format!("{p}.output.dense"))?,
                    act: cfg.activation,
                },
                norm2: norm(format!("{p}.output.LayerNorm"))?,
            });
        }
        let pooler_name = format!("{prefix}pooler.dense.weight");
        let pooler = if t.contains_key(&pooler_name) {
            Some(linear(format!("{prefix}pooler.dense"))?)
        } else {
            None
        };
        Ok(Bert {
            cfg: cfg.clone(),
            word: get(format!("{e}.word_embeddings.weight"))?,
            position: get(format!("{e}.position_embeddings.weight"))?,
            token_type: get(format!("{e}.token_type_embeddings.weight"))?,
            emb_norm: norm(format!("{e}.LayerNorm"))?,
            blocks,
            pooler,
        })
    }

    /// Load `config.json` + `model.safetensors` from a Hugging Face-layout directory.
    pub fn load_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = BertConfig::from_file(&dir.join("config.json"))?;
        let (tensors, st) = load_float_tensors(dir, dtype, device)?;
        Self::from_tensors(&cfg, &tensors, detect_prefix(&tensors), &st)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.word.device()
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.word.dtype()
    }

    /// Hidden states of the last block: ids (B, T) u32, attention mask (B, T) (1 = token,
    /// 0 = padding; none = all tokens), token types (B, T) u32 (none = all 0) -> (B, T, C).
    pub fn forward(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_types: Option<&Tensor>,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "sequence of {t} tokens exceeds the model's maximum of {}",
                self.cfg.max_position_embeddings
            )));
        }
        let c = self.cfg.hidden_size;
        let flat = ids.flatten_all()?;
        let max_id = flat.max(0)?.to_scalar::<u32>()?;
        if max_id as usize >= self.cfg.vocab_size {
            return Err(Error::Input(format!(
                "token id {max_id} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        let mut x = self.word.index_select(&flat, 0)?.reshape((b, t, c))?; // (B, T, C)
        x = x.broadcast_add(&self.position.narrow(0, 0, t)?)?; // + (T, C)
        x = match token_types {
            Some(tt) => {
                let e = self.token_type.index_select(&tt.flatten_all()?, 0)?; // (B T, C)
                (x + e.reshape((b, t, c))?)?
            }
            None => x.broadcast_add(&self.token_type.narrow(0, 0, 1)?)?, // + (1, C)
        };
        x = self.emb_norm.forward(&x)?;
        let mask = match attention_mask {
            Some(m) => Some(padding_mask(m)?.to_dtype(x.dtype())?), // (B, 1, 1, T)
            None => None,
        };
        let mut drop = drop;
        if let Some(d) = drop.as_deref_mut() {
            x = d.hidden(&x)?;
        }
        let mixing = Mixing::Bidirectional {
            mask: mask.as_ref(),
        };
        for block in &self.blocks {
            x = block.forward(&x, &mixing, None, drop.as_deref_mut())?;
        }
        Ok(x)
    }

    /// Hidden states of the last block for a packed batch (no padding): (N, C), where sequence i
    /// is rows `packed.offsets[i]..packed.offsets[i + 1]`. The same numbers as [`Bert::forward`]
    /// at the real tokens, without computing anything for padding; used for training and
    /// inference by the tasks.
    pub fn forward_packed(
        &self,
        packed: &Packed,
        drop: Option<&mut BlockDropout<'_>>,
    ) -> Result<Tensor> {
        if packed.max_len > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "sequence of {} tokens exceeds the model's maximum of {}",
                packed.max_len, self.cfg.max_position_embeddings
            )));
        }
        if let Some(&id) = packed.ids_host.iter().max() {
            if id as usize >= self.cfg.vocab_size {
                return Err(Error::Input(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        let mut x = self.word.index_select(&packed.ids, 0)?; // (N, C)
        x = (x + self.position.index_select(&packed.positions, 0)?)?;
        x = match &packed.token_types {
            Some(tt) => (x + self.token_type.index_select(tt, 0)?)?,
            None => x.broadcast_add(&self.token_type.narrow(0, 0, 1)?)?,
        };
        x = self.emb_norm.forward(&x)?;
        let mut drop = drop;
        if let Some(d) = drop.as_deref_mut() {
            x = d.hidden(&x)?;
        }
        let mixing = Mixing::Packed {
            offsets: packed.offsets.clone(),
        };
        for block in &self.blocks {
            x = block.forward(&x, &mixing, None, drop.as_deref_mut())?;
        }
        Ok(x)
    }

    /// The first token's hidden state of each sequence of a packed batch: (N, C) -> (B, C).
    pub fn first_tokens(&self, hidden: &Tensor, packed: &Packed) -> Result<Tensor> {
        Ok(hidden.index_select(&packed.first_rows()?, 0)?)
    }

    /// BERT's pooled output of a packed batch: tanh(pooler(first token)), (N, C) -> (B, C).
    pub fn pool_packed(&self, hidden: &Tensor, packed: &Packed) -> Result<Tensor> {
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            Error::Input("this checkpoint has no pooler (pooler.dense) to pool with".into())
        })?;
        Ok(pooler
            .forward(&self.first_tokens(hidden, packed)?)?
            .tanh()?)
    }

    /// BERT's pooled output: tanh(pooler(h[:, 0])) for hidden states (B, T, C) -> (B, C).
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            Error::Input("this checkpoint has no pooler (pooler.dense) to pool with".into())
        })?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?; // (B, C)
        Ok(pooler.forward(&cls)?.tanh()?)
    }
}

/// All floating tensors of `dir/model.safetensors` converted to `dtype` (integer buffers such as
/// `position_ids` dropped), and the file's path.
pub fn load_float_tensors(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, std::path::PathBuf)> {
    let st = dir.join("model.safetensors");
    if !st.exists() {
        return Err(Error::checkpoint(
            &st,
            "missing (expected a Hugging Face model directory)",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in crate::weights::safetensors::load_safetensors(&st, device)? {
        if v.dtype().is_float() {
            out.insert(k, v.to_dtype(dtype)?);
        }
    }
    Ok((out, st))
}

/// A batch of token sequences packed end to end without padding: sequence i is rows
/// `offsets[i]..offsets[i + 1]` of the packed (N, ...) tensors.
#[derive(Clone, Debug)]
pub struct Packed {
    /// Token ids (N,) u32.
    pub ids: Tensor,
    /// Position of each token in its sequence (N,) u32.
    pub positions: Tensor,
    /// Token types (N,) u32; none = all 0.
    pub token_types: Option<Tensor>,
    /// B + 1 row offsets.
    pub offsets: std::sync::Arc<[usize]>,
    /// The longest sequence.
    pub max_len: usize,
    ids_host: Vec<u32>,
}

impl Packed {
    /// Pack `seqs` (each non-empty) onto `device`.
    pub fn new(seqs: &[&[u32]], device: &Device) -> Result<Self> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::Input("empty batch or empty sequence".into()));
        }
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        let mut ids = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for s in seqs {
            ids.extend_from_slice(s);
            pos.extend(0..s.len() as u32);
            offsets.push(ids.len());
        }
        Ok(Packed {
            ids: Tensor::from_slice(&ids, n, device)?,
            positions: Tensor::from_vec(pos, n, device)?,
            token_types: None,
            offsets: offsets.into(),
            max_len: seqs.iter().map(|s| s.len()).max().unwrap_or(0),
            ids_host: ids,
        })
    }

    /// With token types (one per token, same layout as the ids).
    pub fn with_token_types(mut self, types: &[&[u32]]) -> Result<Self> {
        let flat: Vec<u32> = types.iter().flat_map(|t| t.iter().copied()).collect();
        if flat.len() != self.ids_host.len() {
            return Err(Error::Input(
                "token types do not match the token ids".into(),
            ));
        }
        self.token_types = Some(Tensor::from_vec(
            flat,
            self.ids_host.len(),
            self.ids.device(),
        )?);
        Ok(self)
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Total tokens N.
    pub fn tokens(&self) -> usize {
        self.ids_host.len()
    }

    /// Row of token `i` of sequence `b`.
    pub fn row(&self, b: usize, i: usize) -> usize {
        self.offsets[b] + i
    }

    /// Length of sequence `b`.
    pub fn len_of(&self, b: usize) -> usize {
        self.offsets[b + 1] - self.offsets[b]
    }

    /// Rows of each sequence's first token (B,) u32.
    pub fn first_rows(&self) -> Result<Tensor> {
        let rows: Vec<u32> = self.offsets[..self.batch()]
            .iter()
            .map(|&o| o as u32)
            .collect();
        Ok(Tensor::from_vec(rows, self.batch(), self.ids.device())?)
    }

    /// Per-sequence mean of packed rows (N, C) -> (B, C) (mean pooling without padding).
    pub fn mean_rows(&self, x: &Tensor) -> Result<Tensor> {
        let mut means = Vec::with_capacity(self.batch());
        for b in 0..self.batch() {
            means.push(
                x.narrow(0, self.offsets[b], self.len_of(b))?
                    .mean_keepdim(0)?,
            );
        }
        Ok(Tensor::cat(&means, 0)?)
    }
}
