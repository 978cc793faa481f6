//! The inference backend of every decoder: the Transformer of a [`TransformerConfig`] run on plain
//! slices, for generation, chat, perplexity and benchmarks.
//!
//! ```text
//! x = embed[ids] (+ positions[pos])                 (n, C)
//! for each block:
//!     h = norm1(x) ; q, k, v = h Wq^T (+b), h Wk^T (+b), h Wv^T (+b) ; rotary on q, k
//!     append k, v to the cache ; x += attend(q, cache) Wo^T (+b)
//!     h = norm2(x) ; x += mlp(h)                    (gated: down(act(gate h) * up h))
//! logits = norm(x_last) Whead^T                     (V)
//! ```
//!
//! The same configuration the tensor-engine [`Transformer`](crate::models::Transformer) trains
//! (GPT-2 and Llama layouts: LayerNorm or RMSNorm, learned or rotary positions, GELU or gated
//! MLP, biases, grouped-query heads, tied head; and the decoder of an encoder-decoder: post-norm
//! blocks, scaled embeddings, sinusoidal positions, a logits bias, and the cross-attention slot
//! reading a [`CrossMemory`] after `attend`: `x += attend(q(x), memory) Wo^T`), with every weight
//! a [`QMatrix`]: the blocks of a
//! GGUF file (read in place from the memory map, or, for Q4_0/Q4_1/Q8_0 on AVX-512 VNNI CPUs,
//! copied once into the 16-row interleaved layout of the broadcast kernels), or f32 rows from a
//! safetensors checkpoint.
//! Products run on a [`HotPool`] (threads kept hot across the few hundred small products of a
//! decode step); the KV cache ([`KvCache`]) is preallocated for the state's capacity; a decode
//! step allocates nothing.
//!
//! Two roundings, picked by the loader ([`Numerics`]): a GGUF model computes as llama.cpp does
//! (8-bit activations in the quantized products, f16 KV cache, the query and attention weights
//! rounded to f16, rotary angles by repeated multiplication), so its logits follow llama.cpp's; a
//! safetensors checkpoint as transformers does (f32 throughout), so its logits follow
//! transformers' and the tensor engine's.

use crate::kernels::cache_attention::{self as ca, F16Kernels};
use crate::kernels::norm::normalize_row;
use crate::kernels::quant::{matmul_many, QMatrix, QType};
use crate::kernels::rotary;
use crate::models::gguf_loader::config_from_gguf;
use crate::models::lora::Adapter;
use crate::models::params::names;
use crate::models::{NormKind, NormPlacement, PositionKind, TransformerConfig};
use crate::util::pool::{HotPool, SharedMut};
use crate::weights::{ggml_type_name, Gguf};
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Prompt tokens processed per forward pass (longer prompts go in chunks of this many).
const PREFILL_CHUNK: usize = 256;
/// Attention tasks per query head in a prefill pass (queries split round-robin).
const ATT_SPLIT: usize = 4;

/// Whose arithmetic the model follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// llama.cpp's: f16 KV cache, query and attention weights rounded to f16, rotary angles by
    /// repeated multiplication (GGUF models, checked against llama.cpp's logits).
    Ggml,
    /// transformers': f32 throughout (safetensors checkpoints, checked against transformers'
    /// logits and the tensor engine's).
    Hf,
}

/// A normalization layer's weights.
#[derive(Clone)]
struct Norm {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    rms: bool,
    eps: f32,
}

impl Norm {
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        normalize_row(out, x, &self.w, self.b.as_deref(), self.eps, self.rms);
    }
}

/// `y = x W^T (+ b)`.
struct Proj {
    w: QMatrix,
    b: Option<Vec<f32>>,
}

enum Mlp {
    Gated { gate: Proj, up: Proj, down: Proj },
    Plain { fc: Proj, proj: Proj },
}

struct Layer {
    norm1: Norm,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    /// The cross-attention slot (the decoder of an encoder-decoder).
    cross: Option<Cross>,
    norm2: Norm,
    mlp: Mlp,
}

/// A block's cross-attention: queries from the stream, keys and values from the encoder's output
/// (projected once per sentence into a [`CrossMemory`]).
struct Cross {
    norm: Norm,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
}

/// A causal stack's relative position bias (T5) by distance: `by_dist[dist · H + head]` is head
/// `head`'s bias of a key `dist` positions before its query, for every distance a cache can hold
/// (the bucket's logarithm is taken once, at load).
#[derive(Clone)]
struct RelBias {
    by_dist: Vec<f32>,
    heads: usize,
}

impl RelBias {
    /// From the (buckets, H) table, for distances `0..positions`.
    fn new(
        table: &[f32],
        heads: usize,
        buckets: usize,
        max_distance: usize,
        positions: usize,
    ) -> Self {
        let mut by_dist = Vec::with_capacity(positions * heads);
        for dist in 0..positions {
            let b =
                crate::nn::position::relative_bucket(-(dist as i64), false, buckets, max_distance);
            by_dist.extend_from_slice(&table[b * heads..(b + 1) * heads]);
        }
        RelBias { by_dist, heads }
    }

    /// Head `head`'s bias of key `j` for the query at position `q`.
    #[inline]
    fn at(&self, head: usize, q: usize, j: usize) -> f32 {
        self.by_dist[(q - j) * self.heads + head]
    }
}

/// An encoder output as every layer's cross-attention reads it: keys and values of its `len`
/// positions, (layers, kv heads, len, D) each. Shared (one per sentence) by the states of its
/// beams.
pub struct CrossMemory {
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl CrossMemory {
    /// Encoder positions it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no position.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A decoder ready for inference. See the module documentation.
pub struct Decoder {
    /// The model's configuration (Hugging Face names).
    pub cfg: TransformerConfig,
    embed: QMatrix,
    /// Learned (or sinusoidal) positions, (P, C) row-major.
    positions: Option<Vec<f32>>,
    layers: Vec<Layer>,
    /// The final norm (pre-norm models; post-norm blocks end normalized).
    norm: Option<Norm>,
    /// Each block normalizes after its residual adds (Marian, BERT) instead of before.
    post_norm: bool,
    /// Token embeddings are multiplied by this (Marian's sqrt(C)).
    embed_scale: Option<f32>,
    /// Added to every logit row (Marian's `final_logits_bias`).
    logits_bias: Option<Vec<f32>>,
    head: QMatrix,
    numerics: Numerics,
    /// Rotary frequencies (transformers' table; [`Numerics::Ggml`] computes its angles apart).
    freqs: Vec<f32>,
    /// T5's relative position bias of the self-attention (a causal stack: the past only).
    rel_bias: Option<RelBias>,
    /// The factor on q·k (1/sqrt(D), or the config's).
    att_scale: f32,
    f16: F16Kernels,
    pool: HotPool,
    source: PathBuf,
}

/// One sequence's keys and values for every layer, preallocated for `cap` positions:
/// (layers, kv heads, cap, D), in f16 (llama.cpp's default) or f32. The pages of positions not
/// yet used are never touched.
pub enum KvCache {
    F16 { k: Vec<u16>, v: Vec<u16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

impl KvCache {
    fn new(f16: bool, n: usize, what: &str) -> Result<Self> {
        use crate::util::alloc::zeroed;
        Ok(if f16 {
            KvCache::F16 {
                k: zeroed(n, what)?,
                v: zeroed(n, what)?,
            }
        } else {
            KvCache::F32 {
                k: zeroed(n, what)?,
                v: zeroed(n, what)?,
            }
        })
    }

    /// Copy `n` values at `from` in `src` (the same kind of cache) to `to` in this one.
    fn copy_from(&mut self, src: &KvCache, from: usize, to: usize, n: usize) {
        match (self, src) {
            (KvCache::F16 { k, v }, KvCache::F16 { k: sk, v: sv }) => {
                k[to..to + n].copy_from_slice(&sk[from..from + n]);
                v[to..to + n].copy_from_slice(&sv[from..from + n]);
            }
            (KvCache::F32 { k, v }, KvCache::F32 { k: sk, v: sv }) => {
                k[to..to + n].copy_from_slice(&sk[from..from + n]);
                v[to..to + n].copy_from_slice(&sv[from..from + n]);
            }
            _ => unreachable!("states of one decoder share their cache kind"),
        }
    }

    /// Write one key and value row (`d` values each) at element offset `at`.
    fn store(&mut self, at: usize, k: &[f32], v: &[f32]) {
        let d = k.len();
        match self {
            KvCache::F16 { k: kc, v: vc } => {
                ca::to_f16(k, &mut kc[at..at + d]);
                ca::to_f16(v, &mut vc[at..at + d]);
            }
            KvCache::F32 { k: kc, v: vc } => {
                kc[at..at + d].copy_from_slice(k);
                vc[at..at + d].copy_from_slice(v);
            }
        }
    }
}

/// One sequence's cached keys and values and its position.
struct Cache {
    pos: usize,
    cap: usize,
    kv: KvCache,
    /// The encoder output its cross-attention reads (encoder-decoders).
    cross: Option<std::sync::Arc<CrossMemory>>,
}

impl Cache {
    /// Attention scores a query of this sequence may need (its own positions or the encoder
    /// output's, whichever is longer).
    fn score_need(&self) -> usize {
        self.cap.max(self.cross.as_ref().map_or(0, |m| m.len))
    }
}

/// Working buffers of one forward pass over `rows` tokens (one sequence's prompt chunk, or one
/// token of each sequence of a batch).
#[derive(Default)]
struct Scratch {
    rows: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    /// `q` rounded to f16 ([`Numerics::Ggml`]).
    q16: Vec<u16>,
    kn: Vec<f32>,
    vn: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// (rows, D) rotary cos/sin per token.
    cs: Vec<f32>,
    /// The cache each row belongs to, and its position there.
    owner: Vec<usize>,
    pos: Vec<usize>,
    /// Rows counted per cache while positions are assigned.
    seen: Vec<usize>,
    /// One row of `score_cap` scores per attention task.
    scores: Vec<f32>,
    score_cap: usize,
    /// (rows, V) logits.
    logits: Vec<f32>,
}

/// The KV cache and scratch buffers of one sequence.
pub struct State {
    cache: Cache,
    scratch: Scratch,
}

impl State {
    /// Tokens already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.cache.pos
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.pos == 0
    }

    /// Positions the cache holds at most.
    pub fn capacity(&self) -> usize {
        self.cache.cap
    }

    /// Forget the sequence (the buffers are kept).
    pub fn clear(&mut self) {
        self.cache.pos = 0;
    }

    /// Drop cached positions from `len` on (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.cache.pos = self.cache.pos.min(len);
    }
}

/// Working buffers for decode steps over several sequences at once ([`Decoder::step`]).
#[derive(Default)]
pub struct Batch {
    scratch: Scratch,
    /// The rows' token ids of a [`Decoder::step_many`].
    ids: Vec<u32>,
}

/// Self-attention or MLP projection `part` (the names of [`crate::models::family::LayerNamer`]:
/// q, k, v, o, gate, up, down, fc, proj) of a block, if it has it; `mut` for the mutable form.
macro_rules! layer_proj {
    ($l:expr, $part:expr $(, $m:ident)?) => {
        match ($part, &$($m)? $l.mlp) {
            ("q", _) => Some(&$($m)? $l.q),
            ("k", _) => Some(&$($m)? $l.k),
            ("v", _) => Some(&$($m)? $l.v),
            ("o", _) => Some(&$($m)? $l.o),
            ("gate", Mlp::Gated { gate, .. }) => Some(gate),
            ("up", Mlp::Gated { up, .. }) => Some(up),
            ("down", Mlp::Gated { down, .. }) => Some(down),
            ("fc", Mlp::Plain { fc, .. }) => Some(fc),
            ("proj", Mlp::Plain { proj, .. }) => Some(proj),
            _ => None,
        }
    };
}

/// f32 values as the bytes of an F32 [`QMatrix`].
fn f32_matrix(rows: usize, cols: usize, data: &[f32]) -> Result<QMatrix> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    QMatrix::new(QType::F32, rows, cols, bytes)
}

impl Decoder {
    /// A `.gguf` file (quantized, llama.cpp's arithmetic), or a Hugging Face-layout or
    /// `tessera train` run directory (f32, transformers' arithmetic).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return Self::from_gguf(&Gguf::open(path)?);
        }
        let dir = crate::hub::model_dir(path)?;
        let cfg = TransformerConfig::from_file(dir.join("config.json"))?;
        let st = dir.join("model.safetensors");
        let tensors =
            crate::weights::safetensors::load_safetensors(&st, &candle_core::Device::Cpu)?;
        let mut m = Self::from_tensors(&cfg, &tensors, &st)?;
        m.source = dir;
        Ok(m)
    }

    /// Build the model on the tensors of `g` (shares its bytes, except the Q and K rows, copied
    /// into the half-split rotary order, and the matrices [`QMatrix::packed`] interleaves).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let cfg = config_from_gguf(g)?;
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd, ff) = (
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.intermediate_size,
        );
        let bytes = g.shared_bytes();
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<QMatrix> {
            let info = g
                .tensor_info(name)
                .ok_or_else(|| g.error(format!("missing tensor '{name}'")))?;
            let qtype = QType::from_ggml(info.ggml_type).ok_or_else(|| {
                g.error(format!(
                    "tensor '{name}' has type {}, which is not supported",
                    ggml_type_name(info.ggml_type)
                ))
            })?;
            let dims_ok = info.dims.as_slice() == [cols as u64, rows as u64]
                || (rows == 1 && info.dims.as_slice() == [cols as u64]);
            if !dims_ok {
                return Err(g.error(format!(
                    "tensor '{name}' has dims {:?}, expected [{cols}, {rows}]",
                    info.dims
                )));
            }
            QMatrix::from_shared(qtype, rows, cols, bytes.clone(), info.offset, info.n_bytes)
                .map_err(|e| g.error(format!("tensor '{name}': {e}")))
        };
        // The matrix in the layout of this CPU's fastest kernel (`QMatrix::packed`); a packed
        // copy replaces the mapped bytes, whose pages are then released.
        let packed = |name: &str, m: QMatrix| -> QMatrix {
            let p = m.packed();
            if p.is_packed() {
                g.release(name);
            }
            p
        };
        let proj = |name: &str, rows: usize, cols: usize| -> Result<Proj> {
            Ok(Proj {
                w: packed(name, matrix(name, rows, cols)?),
                b: None,
            })
        };
        // Q and K rows from GGUF's interleaved rotary order to the half-split one.
        let rotary_proj = |name: &str, rows: usize| -> Result<Proj> {
            let w = matrix(name, rows, c)?
                .permute_rows(|r| rotary::gguf_row(r, d))
                .map_err(|e| g.error(e.to_string()))?;
            // Copied either way: the mapped pages are not read again.
            g.release(name);
            Ok(Proj {
                w: w.packed(),
                b: None,
            })
        };
        let eps = cfg.norm_eps as f32;
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                w: matrix(name, 1, c)?.dequantize(),
                b: None,
                rms: true,
                eps,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(Layer {
                norm1: norm(&n("attn_norm"))?,
                q: rotary_proj(&n("attn_q"), qd)?,
                k: rotary_proj(&n("attn_k"), kvd)?,
                v: proj(&n("attn_v"), kvd, c)?,
                o: proj(&n("attn_output"), c, qd)?,
                cross: None,
                norm2: norm(&n("ffn_norm"))?,
                mlp: Mlp::Gated {
                    gate: proj(&n("ffn_gate"), ff, c)?,
                    up: proj(&n("ffn_up"), ff, c)?,
                    down: proj(&n("ffn_down"), c, ff)?,
                },
            });
        }
        let embed = packed(
            "token_embd.weight",
            matrix("token_embd.weight", cfg.vocab_size, c)?,
        );
        let head = if g.tensor("output.weight").is_some() {
            packed("output.weight", matrix("output.weight", cfg.vocab_size, c)?)
        } else {
            embed.clone()
        };
        Ok(Decoder {
            norm: Some(norm("output_norm.weight")?),
            post_norm: false,
            embed_scale: None,
            logits_bias: None,
            freqs: Vec::new(),
            rel_bias: None,
            att_scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            numerics: Numerics::Ggml,
            f16: F16Kernels::detect(),
            pool: HotPool::from_env(),
            source: g.path().to_path_buf(),
            positions: None,
            cfg,
            embed,
            layers,
            head,
        })
    }

    /// Build the model from named tensors in the checkpoint layout of `cfg.arch` (Hugging Face
    /// names and shapes, as [`Transformer`](crate::models::Transformer) reads them), in f32 with
    /// transformers' arithmetic; `source` names them in errors.
    pub fn from_tensors(
        cfg: &TransformerConfig,
        tensors: &HashMap<String, Tensor>,
        source: &Path,
    ) -> Result<Self> {
        cfg.require_decoder("the inference backend")?;
        Self::from_tensors_prefixed(cfg, tensors, "", source)
    }

    /// [`Decoder::from_tensors`] for any causal stack, with its tensors under `prefix`: also
    /// post-norm blocks and the cross-attention slot (the decoder of an encoder-decoder, whose
    /// states then need [`Decoder::set_memory`]).
    pub fn from_tensors_prefixed(
        cfg: &TransformerConfig,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        source: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        if !cfg.is_decoder() {
            return Err(Error::Config(format!(
                "the inference backend runs causal stacks; this {:?} one is bidirectional",
                cfg.arch
            )));
        }
        let n = names(cfg.arch, prefix);
        let conv = n.conv1d;
        let bad = |m: String| Error::checkpoint(source, m);
        // A tensor as f32 values with its shape.
        let get = |name: &str| -> Result<(Vec<f32>, Vec<usize>)> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("missing tensor '{name}'")))?;
            let shape = t.dims().to_vec();
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((v, shape))
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let (v, _) = get(name)?;
            if v.len() != len {
                return Err(bad(format!(
                    "tensor '{name}' has {} values, expected {len}",
                    v.len()
                )));
            }
            Ok(v)
        };
        // A projection of `inp` → `out` features as (out, inp) rows (GPT-2 stores (inp, out)).
        let rows_of = |name: &str, inp: usize, out: usize| -> Result<Vec<f32>> {
            let (v, shape) = get(name)?;
            let want = if conv { [inp, out] } else { [out, inp] };
            if shape != want {
                return Err(bad(format!(
                    "tensor '{name}' has shape {shape:?}, expected {want:?}"
                )));
            }
            if !conv {
                return Ok(v);
            }
            let mut t = vec![0f32; v.len()];
            for i in 0..inp {
                for o in 0..out {
                    t[o * inp + i] = v[i * out + o];
                }
            }
            Ok(t)
        };
        let c = cfg.hidden_size;
        let (qd, kvd) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        let eps = cfg.norm_eps as f32;
        let rms = cfg.norm == NormKind::RmsNorm;
        let norm = |prefix: &str| -> Result<Norm> {
            Ok(Norm {
                w: vector(&format!("{prefix}.weight"), c)?,
                b: if rms {
                    None
                } else {
                    Some(vector(&format!("{prefix}.bias"), c)?)
                },
                rms,
                eps,
            })
        };
        let bias = |prefix: &str, len: usize| -> Result<Option<Vec<f32>>> {
            if cfg.bias {
                Ok(Some(vector(&format!("{prefix}.bias"), len)?))
            } else {
                Ok(None)
            }
        };
        let proj = |prefix: &str, inp: usize, out: usize| -> Result<Proj> {
            let w = rows_of(&format!("{prefix}.weight"), inp, out)?;
            Ok(Proj {
                w: f32_matrix(out, inp, &w)?,
                b: bias(prefix, out)?,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let name = |part: &str| (n.layer)(l, part);
            let (q, k, v) = if n.fused_qkv {
                // One (C, q + 2 kv) projection, split into its three row blocks.
                let p = name("qkv");
                let w = rows_of(&format!("{p}.weight"), c, qd + 2 * kvd)?;
                let b = bias(&p, qd + 2 * kvd)?;
                let part = |r0: usize, rows: usize| -> Result<Proj> {
                    Ok(Proj {
                        w: f32_matrix(rows, c, &w[r0 * c..(r0 + rows) * c])?,
                        b: b.as_ref().map(|b| b[r0..r0 + rows].to_vec()),
                    })
                };
                (part(0, qd)?, part(qd, kvd)?, part(qd + kvd, kvd)?)
            } else {
                (
                    proj(&name("q"), c, qd)?,
                    proj(&name("k"), c, kvd)?,
                    proj(&name("v"), c, kvd)?,
                )
            };
            let i = cfg.intermediate_size;
            let mlp = if cfg.gated_mlp {
                Mlp::Gated {
                    gate: proj(&name("gate"), c, i)?,
                    up: proj(&name("up"), c, i)?,
                    down: proj(&name("down"), i, c)?,
                }
            } else {
                Mlp::Plain {
                    fc: proj(&name("fc"), c, i)?,
                    proj: proj(&name("proj"), i, c)?,
                }
            };
            let cross = if cfg.cross_attention {
                Some(Cross {
                    norm: norm(&name("lnx"))?,
                    q: proj(&name("xq"), c, qd)?,
                    k: proj(&name("xk"), c, kvd)?,
                    v: proj(&name("xv"), c, kvd)?,
                    o: proj(&name("xo"), qd, c)?,
                })
            } else {
                None
            };
            layers.push(Layer {
                norm1: norm(&name("ln1"))?,
                q,
                k,
                v,
                o: proj(&name("o"), qd, c)?,
                cross,
                norm2: norm(&name("ln2"))?,
                mlp,
            });
        }
        let (wte, _) = get(&n.wte)?;
        let embed = f32_matrix(cfg.vocab_size, c, &wte)?;
        let head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            let (w, _) = get(&n.lm_head)?;
            f32_matrix(cfg.vocab_size, c, &w)?
        };
        let positions = match cfg.position {
            PositionKind::Learned => Some(vector(&n.wpe, cfg.max_position_embeddings * c)?),
            PositionKind::Sinusoidal => Some(crate::models::transformer::sinusoidal_table(
                cfg.max_position_embeddings,
                c,
            )),
            PositionKind::Rotary { .. } | PositionKind::Relative { .. } => None,
        };
        let freqs = match cfg.position {
            PositionKind::Rotary { theta } => rotary::inv_freqs(cfg.head_dim, theta),
            _ => Vec::new(),
        };
        let rel_bias = match cfg.position {
            PositionKind::Relative {
                buckets,
                max_distance,
            } => Some(RelBias::new(
                &vector(&n.rel_bias, buckets * cfg.num_heads)?,
                cfg.num_heads,
                buckets,
                max_distance,
                cfg.max_position_embeddings,
            )),
            _ => None,
        };
        Ok(Decoder {
            cfg: cfg.clone(),
            embed,
            positions,
            layers,
            norm: if cfg.norm_placement == NormPlacement::Pre {
                Some(norm(&n.ln_f)?)
            } else {
                None
            },
            post_norm: cfg.norm_placement == NormPlacement::Post,
            embed_scale: cfg.scale_embedding.then(|| (cfg.hidden_size as f32).sqrt()),
            logits_bias: None,
            head,
            numerics: Numerics::Hf,
            freqs,
            rel_bias,
            att_scale: cfg
                .attention_scale
                .map_or(1.0 / (cfg.head_dim as f32).sqrt(), |s| s as f32),
            f16: F16Kernels::detect(),
            pool: HotPool::from_env(),
            source: source.to_path_buf(),
        })
    }

    /// The same model with every matrix dequantized to F32 and transformers' arithmetic (f32
    /// activations and cache): the reference the quantized model is checked against. About 4
    /// bytes per parameter.
    pub fn dequantized(&self) -> Result<Decoder> {
        let f = |m: &QMatrix| f32_matrix(m.rows(), m.cols(), &m.dequantize());
        let p = |p: &Proj| -> Result<Proj> {
            Ok(Proj {
                w: f(&p.w)?,
                b: p.b.clone(),
            })
        };
        let n = |n: &Norm| Norm {
            w: n.w.clone(),
            b: n.b.clone(),
            rms: n.rms,
            eps: n.eps,
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    norm1: n(&l.norm1),
                    q: p(&l.q)?,
                    k: p(&l.k)?,
                    v: p(&l.v)?,
                    o: p(&l.o)?,
                    cross: match &l.cross {
                        Some(x) => Some(Cross {
                            norm: n(&x.norm),
                            q: p(&x.q)?,
                            k: p(&x.k)?,
                            v: p(&x.v)?,
                            o: p(&x.o)?,
                        }),
                        None => None,
                    },
                    norm2: n(&l.norm2),
                    mlp: match &l.mlp {
                        Mlp::Gated { gate, up, down } => Mlp::Gated {
                            gate: p(gate)?,
                            up: p(up)?,
                            down: p(down)?,
                        },
                        Mlp::Plain { fc, proj } => Mlp::Plain {
                            fc: p(fc)?,
                            proj: p(proj)?,
                        },
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let freqs = match self.cfg.position {
            PositionKind::Rotary { theta } => rotary::inv_freqs(self.cfg.head_dim, theta),
            _ => Vec::new(),
        };
        Ok(Decoder {
            cfg: self.cfg.clone(),
            embed: f(&self.embed)?,
            positions: self.positions.clone(),
            layers,
            norm: self.norm.clone(),
            post_norm: self.post_norm,
            embed_scale: self.embed_scale,
            logits_bias: self.logits_bias.clone(),
            head: f(&self.head)?,
            numerics: Numerics::Hf,
            freqs,
            rel_bias: self.rel_bias.clone(),
            att_scale: self.att_scale,
            f16: self.f16,
            pool: HotPool::new(self.pool.threads()),
            source: self.source.clone(),
        })
    }

    /// Merge a LoRA adapter into the weights: each projection it adapts becomes
    /// `dequantize(W) + scale·B·A`, an F32 matrix (the merged weights exactly; a GGUF model's other
    /// matrices stay in their blocks, and its arithmetic stays llama.cpp's). `adapter` must have
    /// been read for this model ([`Adapter::load`] refuses a base of another shape); deltas of a
    /// fused `qkv` target are split into the q, k and v row blocks. The deltas come in Hugging
    /// Face row order, which is this model's (GGUF Q and K rows were un-permuted at load).
    ///
    /// F32 matrices take 4 bytes a weight; `tessera export` writes the merged model re-quantized
    /// instead ([`crate::models::gguf_merge`]).
    pub fn apply_adapter(&mut self, adapter: &Adapter) -> Result<()> {
        use rayon::prelude::*;
        let cfg = &self.cfg;
        if self.layers.len() != cfg.num_layers {
            return Err(Error::Config(format!(
                "the model has {} blocks, its config {}",
                self.layers.len(),
                cfg.num_layers
            )));
        }
        let (qd, kvd) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        let jobs: Vec<(usize, &str)> = (0..cfg.num_layers)
            .flat_map(|l| adapter.lora.targets.iter().map(move |p| (l, p.as_str())))
            .collect();
        // (layer, part, merged matrix) for every projection the adapter changes.
        let merged: Vec<Vec<(usize, &str, QMatrix)>> = jobs
            .par_iter()
            .map(|&(l, part)| -> Result<Vec<(usize, &str, QMatrix)>> {
                let delta = adapter.delta(cfg, l, part)?.ok_or_else(|| {
                    Error::Input(format!(
                        "the adapter has no delta for '{part}' of block {l}"
                    ))
                })?;
                // Row blocks of the delta: (projection, first row, rows).
                let blocks: Vec<(&str, usize, usize)> = if part == "qkv" {
                    vec![("q", 0, qd), ("k", qd, kvd), ("v", qd + kvd, kvd)]
                } else {
                    let p = layer_proj!(self.layers[l], part).ok_or_else(|| {
                        Error::Config(format!("block {l} has no '{part}' projection"))
                    })?;
                    vec![(part, 0, p.w.rows())]
                };
                let total: usize = blocks.iter().map(|b| b.2).sum();
                let mut out = Vec::with_capacity(blocks.len());
                for (name, r0, rows) in blocks {
                    let w = &layer_proj!(self.layers[l], name)
                        .ok_or_else(|| {
                            Error::Config(format!("block {l} has no '{name}' projection"))
                        })?
                        .w;
                    let cols = w.cols();
                    if w.rows() != rows || delta.len() != total * cols {
                        return Err(Error::Input(format!(
                            "the adapter's '{part}' delta of block {l} has {} values, which do \
                             not fit the {}x{cols} projection",
                            delta.len(),
                            w.rows()
                        )));
                    }
                    let mut m = w.dequantize();
                    for (x, d) in m.iter_mut().zip(&delta[r0 * cols..(r0 + rows) * cols]) {
                        *x += d;
                    }
                    out.push((l, name, f32_matrix(rows, cols, &m)?));
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        for (l, name, m) in merged.into_iter().flatten() {
            let p = layer_proj!(self.layers[l], name, mut).expect("the projection was found above");
            p.w = m;
        }
        Ok(())
    }

    /// Whose arithmetic this model follows.
    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// The file or directory the weights come from.
    pub fn path(&self) -> &Path {
        &self.source
    }

    /// Threads the products run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// A short description for status lines.
    pub fn describe(&self) -> String {
        match self.numerics {
            Numerics::Ggml => format!(
                "quantized weights, {} kernels, {} threads",
                crate::kernels::quant::simd_level(),
                self.threads()
            ),
            Numerics::Hf => format!("f32 weights, {} threads", self.threads()),
        }
    }

    /// Use at most `n` positions of context (at least 1; never more than the model was built
    /// for): chat and generation then budget their prompts for it, and states hold that many.
    pub fn limit_context(&mut self, n: usize) {
        let m = &mut self.cfg.max_position_embeddings;
        *m = (*m).min(n.max(1));
    }

    /// A fresh sequence state holding up to `capacity` positions (at most the model's context).
    /// The cache is allocated at once but only the pages of positions used are touched; when
    /// the memory is not there, the error says how much was asked for.
    pub fn new_state(&self, capacity: usize) -> Result<State> {
        let cfg = &self.cfg;
        let cap = capacity.clamp(1, cfg.max_position_embeddings.max(1));
        let kv = [cfg.num_layers, cfg.num_kv_heads, cap, cfg.head_dim]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::Input(format!("a KV cache of {cap} positions is too large")))?;
        if self.rel_bias.is_some() && self.numerics == Numerics::Ggml {
            return Err(Error::Config(
                "relative position biases run with the f32 cache only".into(),
            ));
        }
        let what = format!("KV cache for {cap} positions");
        let mut st = State {
            cache: Cache {
                pos: 0,
                cap,
                kv: KvCache::new(self.numerics == Numerics::Ggml, kv, &what)?,
                cross: None,
            },
            scratch: Scratch::default(),
        };
        self.grow(&mut st.scratch, 1, cap)?;
        // One row of logits: a sequence's forward pass returns the last position's.
        self.grow_logits(&mut st.scratch, 1)?;
        Ok(st)
    }

    /// Buffers for decode steps over several sequences ([`Decoder::step`]); they grow to the
    /// largest batch and context seen, then a step allocates nothing.
    pub fn new_batch(&self) -> Batch {
        Batch::default()
    }

    /// Make `sc` hold logits for `rows` rows (a batched step's; a prompt chunk needs one row).
    fn grow_logits(&self, sc: &mut Scratch, rows: usize) -> Result<()> {
        let n = self.cfg.vocab_size * rows.max(1);
        if sc.logits.len() < n {
            sc.logits = crate::util::alloc::zeroed(n, "logits")?;
        }
        Ok(())
    }

    /// Make `sc` hold `rows` rows and attention scores for contexts of `cap` positions.
    fn grow(&self, sc: &mut Scratch, rows: usize, cap: usize) -> Result<()> {
        let cfg = &self.cfg;
        if sc.score_cap < cap {
            sc.scores =
                crate::util::alloc::zeroed(cfg.num_heads * ATT_SPLIT * cap, "attention scores")?;
            sc.score_cap = cap;
        }
        if sc.rows >= rows {
            return Ok(());
        }
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd, ff) = (
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.intermediate_size,
        );
        for (buf, width) in [
            (&mut sc.x, c),
            (&mut sc.h, c),
            (&mut sc.q, qd),
            (&mut sc.kn, kvd),
            (&mut sc.vn, kvd),
            (&mut sc.att, qd),
            (&mut sc.tmp, c.max(qd)),
            (&mut sc.gate, ff),
            (&mut sc.up, ff),
            (&mut sc.cs, d),
        ] {
            buf.resize(rows * width, 0.0);
        }
        if self.numerics == Numerics::Ggml {
            sc.q16.resize(rows * qd, 0);
        }
        sc.owner.resize(rows, 0);
        sc.pos.resize(rows, 0);
        sc.rows = rows;
        Ok(())
    }

    /// Feed `ids` after what `st` holds; returns the logits (V) of the last one.
    ///
    /// Errors (leaving `st` unchanged) on an empty input, an id outside the vocabulary, or when
    /// the cache would overflow its capacity.
    pub fn forward<'s>(&self, st: &'s mut State, ids: &[u32]) -> Result<&'s [f32]> {
        self.check(&st.cache, ids)?;
        let mut last = 0;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            self.forward_chunk(st, chunk)?;
            last = chunk.len();
        }
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let sc = &mut st.scratch;
        let i = last - 1;
        let (x, h) = (&sc.x[i * c..(i + 1) * c], &mut sc.h[..c]);
        self.final_norm(x, h);
        self.head
            .matmul_on(&self.pool, &sc.h[..c], 1, &mut sc.logits[..v])?;
        add_bias(&mut sc.logits[..v], self.logits_bias.as_deref());
        Ok(&sc.logits[..v])
    }

    /// Feed `ids` and return the logits of every one of them, (n, V) row-major (for evaluation
    /// and tests).
    pub fn forward_all(&self, st: &mut State, ids: &[u32]) -> Result<Vec<f32>> {
        self.check(&st.cache, ids)?;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let mut out = crate::util::alloc::zeroed(ids.len() * v, "logits")?;
        let mut done = 0;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            self.forward_chunk(st, chunk)?;
            let n = chunk.len();
            let sc = &mut st.scratch;
            for i in 0..n {
                let (x, h) = (&sc.x[i * c..(i + 1) * c], &mut sc.h[i * c..(i + 1) * c]);
                self.final_norm(x, h);
            }
            let o = &mut out[done * v..(done + n) * v];
            self.head.matmul_on(&self.pool, &sc.h[..n * c], n, o)?;
            add_bias(o, self.logits_bias.as_deref());
            done += n;
        }
        Ok(out)
    }

    /// One decode step for several sequences at once: feed `ids[i]` after what `states[i]`
    /// holds. Every product runs once over all the rows (the weights are read once per step, not
    /// once per sequence); attention reads each sequence's own cache. Returns the logits,
    /// (n, V) row-major, row i for sequence i: the same numbers as [`Decoder::forward`] on each
    /// state alone.
    ///
    /// Errors (leaving every state unchanged) when the lengths differ, an id is outside the
    /// vocabulary, or a state is full. The logits are the batch's buffer, for the caller to
    /// transform in place (beam search's log-softmax).
    pub fn step<'b>(
        &self,
        batch: &'b mut Batch,
        states: &mut [&mut State],
        ids: &[u32],
    ) -> Result<&'b mut [f32]> {
        let feeds: Vec<&[u32]> = ids.iter().map(std::slice::from_ref).collect();
        self.step_many(batch, states, &feeds)
    }

    /// [`Decoder::step`] with any number of tokens per sequence: feed `feeds[i]` (at least one
    /// token) after what `states[i]` holds, all rows through every product at once, and return
    /// the logits of each sequence's last token, (n, V) row-major. A joining request's prompt
    /// rides in the same pass as the running sequences' next tokens (their weights are read
    /// once). Each row's numbers are those of [`Decoder::forward`] on its state alone as long as
    /// every product takes the same kernel path (fewer than `F32_GEMM_MIN_ROWS` rows in all, or
    /// the caller's split): the integer kernels give each row the same bits whatever rows share
    /// the product.
    ///
    /// Errors (leaving every state unchanged) when the lengths differ, a feed is empty, an id is
    /// outside the vocabulary, or a state would overflow.
    pub fn step_many<'b>(
        &self,
        batch: &'b mut Batch,
        states: &mut [&mut State],
        feeds: &[&[u32]],
    ) -> Result<&'b mut [f32]> {
        let n = feeds.len();
        if states.len() != n {
            return Err(Error::Input(format!(
                "{} sequences but {n} token lists",
                states.len()
            )));
        }
        if n == 0 {
            return Ok(&mut []);
        }
        for (st, feed) in states.iter().zip(feeds) {
            self.check(&st.cache, feed)?;
        }
        let rows: usize = feeds.iter().map(|f| f.len()).sum();
        let cap = states
            .iter()
            .map(|s| s.cache.score_need())
            .max()
            .unwrap_or(1);
        let sc = &mut batch.scratch;
        self.grow(sc, rows, cap)?;
        self.grow_logits(sc, n)?;
        let mut ids = std::mem::take(&mut batch.ids);
        ids.clear();
        let mut r = 0;
        for (i, feed) in feeds.iter().enumerate() {
            ids.extend_from_slice(feed);
            sc.owner[r..r + feed.len()].fill(i);
            r += feed.len();
        }
        let mut caches: Vec<&mut Cache> = states.iter_mut().map(|s| &mut s.cache).collect();
        let done = self.forward_rows(sc, &mut caches, &ids);
        batch.ids = ids;
        done?;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        // Row i of `h`: the final norm of sequence i's last row (at or after row i of `x`).
        let mut last = 0;
        for (i, feed) in feeds.iter().enumerate() {
            last += feed.len();
            let r = last - 1;
            let (x, h) = (&sc.x[r * c..(r + 1) * c], &mut sc.h[i * c..(i + 1) * c]);
            self.final_norm(x, h);
        }
        self.head
            .matmul_on(&self.pool, &sc.h[..n * c], n, &mut sc.logits[..n * v])?;
        add_bias(&mut sc.logits[..n * v], self.logits_bias.as_deref());
        Ok(&mut sc.logits[..n * v])
    }

    /// Make `dst` hold the first `len` positions `src` holds (states of this decoder): a shared
    /// prompt prefix computed once and reused (prefix cache).
    pub fn copy_prefix(&self, dst: &mut State, src: &State, len: usize) -> Result<()> {
        let len = len.min(src.len());
        if len > dst.capacity() {
            return Err(Error::Input(format!(
                "a prefix of {len} positions does not fit a cache of {}",
                dst.capacity()
            )));
        }
        let d = self.cfg.head_dim;
        let (ca_, cb) = (dst.cache.cap, src.cache.cap);
        // Layout (layers, kv heads, cap, D): one run of `len` rows per (layer, head).
        for j in 0..self.cfg.num_layers * self.cfg.num_kv_heads {
            dst.cache
                .kv
                .copy_from(&src.cache.kv, j * cb * d, j * ca_ * d, len * d);
        }
        dst.cache.pos = len;
        if let Some(m) = &src.cache.cross {
            self.set_memory(dst, m.clone())?;
        }
        Ok(())
    }

    fn check(&self, cache: &Cache, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Input("no tokens to feed".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        if cache.pos + ids.len() > cache.cap {
            return Err(Error::Input(format!(
                "{} + {} tokens exceed the context of {} positions",
                cache.pos,
                ids.len(),
                cache.cap
            )));
        }
        Ok(())
    }

    /// `out (n, rows) = x (n, cols) W^T + b` on the pool.
    fn project(&self, p: &Proj, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        p.w.matmul_on(&self.pool, x, n, out)?;
        add_bias(out, p.b.as_deref());
        Ok(())
    }

    /// Several projections of the same `n` input rows: one parallel job where the kernels allow
    /// (`kernels::quant::matmul_many`), nothing allocated.
    fn project_many<const N: usize>(
        &self,
        x: &[f32],
        n: usize,
        prods: [(&Proj, &mut [f32]); N],
    ) -> Result<()> {
        let ps: [&Proj; N] = std::array::from_fn(|i| prods[i].0);
        let mut jobs = prods.map(|(p, o)| (&p.w, o));
        matmul_many(&self.pool, x, n, &mut jobs)?;
        for ((_, out), p) in jobs.iter_mut().zip(ps) {
            add_bias(out, p.b.as_deref());
        }
        Ok(())
    }

    /// Run `ids` (at most `PREFILL_CHUNK`) of one sequence through every layer, leaving the
    /// final hidden states (before the last norm) in its scratch and the keys/values in its cache.
    fn forward_chunk(&self, st: &mut State, ids: &[u32]) -> Result<()> {
        let n = ids.len();
        let State { cache, scratch } = st;
        self.grow(scratch, n, cache.score_need())?;
        scratch.owner[..n].fill(0);
        self.forward_rows(scratch, &mut [cache], ids)
    }

    /// Run `ids` through every layer, row i belonging to the sequence of `caches[sc.owner[i]]`
    /// (its rows in order after what that cache holds): the final hidden states (before the
    /// last norm) stay in `sc.x`, the keys and values go to the caches, whose positions advance.
    fn forward_rows(&self, sc: &mut Scratch, caches: &mut [&mut Cache], ids: &[u32]) -> Result<()> {
        let n = ids.len();
        let cfg = &self.cfg;
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd, ff) = (
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.intermediate_size,
        );
        // Each row's position: its cache's length plus the rows of that cache before it.
        sc.seen.clear();
        sc.seen.resize(caches.len(), 0);
        for i in 0..n {
            let o = sc.owner[i];
            sc.pos[i] = caches[o].pos + sc.seen[o];
            sc.seen[o] += 1;
        }
        for (i, &id) in ids.iter().enumerate() {
            let pos = sc.pos[i];
            let x = &mut sc.x[i * c..(i + 1) * c];
            self.embed.dequantize_row(id as usize, x);
            if let Some(s) = self.embed_scale {
                x.iter_mut().for_each(|v| *v *= s);
            }
            if let Some(p) = &self.positions {
                ca::add_assign(x, &p[pos * c..(pos + 1) * c]);
            }
            if let PositionKind::Rotary { theta } = cfg.position {
                let cs = &mut sc.cs[i * d..(i + 1) * d];
                match self.numerics {
                    Numerics::Ggml => rotary::angles_ggml(pos, d, theta, cs),
                    Numerics::Hf => rotary::angles(pos, &self.freqs, cs),
                }
            }
        }
        let rotary = matches!(cfg.position, PositionKind::Rotary { .. });
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention: pre-norm reads norm1(x), post-norm x itself.
            if !self.post_norm {
                self.norm_rows(&layer.norm1, &sc.x[..n * c], &mut sc.h[..n * c]);
            }
            let input = if self.post_norm { &sc.x } else { &sc.h };
            let (q, kn, vn) = (
                &mut sc.q[..n * qd],
                &mut sc.kn[..n * kvd],
                &mut sc.vn[..n * kvd],
            );
            self.project_many(
                &input[..n * c],
                n,
                [(&layer.q, q), (&layer.k, kn), (&layer.v, vn)],
            )?;
            if rotary {
                for i in 0..n {
                    let cs = &sc.cs[i * d..(i + 1) * d];
                    rotary::rotate(&mut sc.q[i * qd..(i + 1) * qd], d, cs);
                    rotary::rotate(&mut sc.kn[i * kvd..(i + 1) * kvd], d, cs);
                }
            }
            if self.numerics == Numerics::Ggml {
                ca::to_f16(&sc.q[..n * qd], &mut sc.q16[..n * qd]);
            }
            self.store_kv(sc, caches, l, n);
            self.attention(sc, caches, l, n);
            self.project(&layer.o, &sc.att[..n * qd], n, &mut sc.tmp[..n * c])?;
            self.residual(&layer.norm1, sc, n);
            // Cross-attention over the encoder output.
            if let Some(cross) = &layer.cross {
                if !self.post_norm {
                    self.norm_rows(&cross.norm, &sc.x[..n * c], &mut sc.h[..n * c]);
                }
                let input = if self.post_norm { &sc.x } else { &sc.h };
                self.project(&cross.q, &input[..n * c], n, &mut sc.q[..n * qd])?;
                self.cross_attention(sc, caches, l, n)?;
                self.project(&cross.o, &sc.att[..n * qd], n, &mut sc.tmp[..n * c])?;
                self.residual(&cross.norm, sc, n);
            }
            // MLP.
            if !self.post_norm {
                self.norm_rows(&layer.norm2, &sc.x[..n * c], &mut sc.h[..n * c]);
            }
            let h = if self.post_norm {
                &sc.x[..n * c]
            } else {
                &sc.h[..n * c]
            };
            let g = &mut sc.gate[..n * ff];
            match &layer.mlp {
                Mlp::Gated { gate, up, down } => {
                    let u = &mut sc.up[..n * ff];
                    self.project_many(h, n, [(gate, g), (up, u)])?;
                    self.gate_rows(g, u);
                    self.project(down, g, n, &mut sc.tmp[..n * c])?;
                }
                Mlp::Plain { fc, proj } => {
                    self.project(fc, h, n, g)?;
                    cfg.activation.apply_slice(g);
                    self.project(proj, g, n, &mut sc.tmp[..n * c])?;
                }
            }
            self.residual(&layer.norm2, sc, n);
        }
        for i in 0..n {
            let o = sc.owner[i];
            caches[o].pos = caches[o].pos.max(sc.pos[i] + 1);
        }
        Ok(())
    }

    /// `g = act(g) ⊙ u`, split over the pool once there are enough values to pay for a job
    /// (several decoded rows, a prompt chunk); element by element as one thread would.
    fn gate_rows(&self, g: &mut [f32], u: &[f32]) {
        const MIN_PER_TASK: usize = 2048;
        let act = self.cfg.activation;
        let tasks = (g.len() / MIN_PER_TASK).min(4 * self.pool.threads());
        if tasks < 2 {
            act.apply_gated(g, u);
            return;
        }
        let chunk = g.len().div_ceil(tasks).next_multiple_of(16);
        let len = g.len();
        let gs = SharedMut::new(g);
        self.pool.run(len.div_ceil(chunk), &|t| {
            let (a, b) = (t * chunk, ((t + 1) * chunk).min(len));
            // SAFETY: task t alone takes elements a..b.
            act.apply_gated(unsafe { gs.range(a, b) }, &u[a..b]);
        });
    }

    /// `out` row i = norm(`x` row i).
    fn norm_rows(&self, norm: &Norm, x: &[f32], out: &mut [f32]) {
        let c = self.cfg.hidden_size;
        for (xi, oi) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            norm.apply(xi, oi);
        }
    }

    /// Add a sublayer's output (`sc.tmp`) to the residual stream `sc.x`; post-norm blocks then
    /// normalize the sum with the sublayer's `norm`.
    fn residual(&self, norm: &Norm, sc: &mut Scratch, n: usize) {
        let c = self.cfg.hidden_size;
        ca::add_assign(&mut sc.x[..n * c], &sc.tmp[..n * c]);
        if self.post_norm {
            self.norm_rows(norm, &sc.x[..n * c], &mut sc.h[..n * c]);
            sc.x[..n * c].copy_from_slice(&sc.h[..n * c]);
        }
    }

    /// The last norm before the head (none after post-norm blocks: `x` is copied).
    fn final_norm(&self, x: &[f32], h: &mut [f32]) {
        match &self.norm {
            Some(n) => n.apply(x, h),
            None => h.copy_from_slice(x),
        }
    }

    /// Multiply the last hidden state by `s` before the head (original T5's d_model^-0.5),
    /// folded into the final norm's weight (and bias).
    pub fn scale_output(&mut self, s: f32) -> Result<()> {
        let norm = self.norm.as_mut().ok_or_else(|| {
            Error::Config("an output scale needs a final norm to fold into (pre-norm)".into())
        })?;
        norm.w.iter_mut().for_each(|w| *w *= s);
        if let Some(b) = &mut norm.b {
            b.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }

    /// Add `bias` (V values) to every logit row: Marian's `final_logits_bias`.
    pub fn set_logits_bias(&mut self, bias: Vec<f32>) -> Result<()> {
        if bias.len() != self.cfg.vocab_size {
            return Err(Error::Input(format!(
                "a logits bias of {} values for a vocabulary of {}",
                bias.len(),
                self.cfg.vocab_size
            )));
        }
        self.logits_bias = Some(bias);
        Ok(())
    }

    /// An encoder output, `len` rows of C values, projected into every layer's cross-attention
    /// keys and values (once per sentence; its states share it through [`Decoder::set_memory`]).
    pub fn cross_memory(&self, memory: &[f32], len: usize) -> Result<Arc<CrossMemory>> {
        let cfg = &self.cfg;
        let (c, d, hkv) = (cfg.hidden_size, cfg.head_dim, cfg.num_kv_heads);
        let kvd = hkv * d;
        if memory.len() != len * c {
            return Err(Error::Input(format!(
                "an encoder output of {} values is not {len} rows of {c}",
                memory.len()
            )));
        }
        if !cfg.cross_attention {
            return Err(Error::Input(
                "this decoder has no cross-attention to read an encoder output".into(),
            ));
        }
        let size = cfg.num_layers * kvd * len;
        let mut k = crate::util::alloc::zeroed(size, "cross-attention keys")?;
        let mut v = crate::util::alloc::zeroed(size, "cross-attention values")?;
        let (mut pk, mut pv) = (vec![0f32; len * kvd], vec![0f32; len * kvd]);
        for (l, layer) in self.layers.iter().enumerate() {
            let cross = layer
                .cross
                .as_ref()
                .expect("a cross-attention decoder's layers have it");
            if len > 0 {
                self.project_many(
                    memory,
                    len,
                    [(&cross.k, &mut pk[..]), (&cross.v, &mut pv[..])],
                )?;
            }
            // (len, Hkv·D) rows -> (Hkv, len, D) runs of this layer.
            for h in 0..hkv {
                for p in 0..len {
                    let dst = ((l * hkv + h) * len + p) * d;
                    let src = p * kvd + h * d;
                    k[dst..dst + d].copy_from_slice(&pk[src..src + d]);
                    v[dst..dst + d].copy_from_slice(&pv[src..src + d]);
                }
            }
        }
        Ok(Arc::new(CrossMemory { len, k, v }))
    }

    /// Make `st` read `mem` in its cross-attention (kept until replaced; [`State::clear`] keeps
    /// it too).
    pub fn set_memory(&self, st: &mut State, mem: Arc<CrossMemory>) -> Result<()> {
        let need = st.cache.cap.max(mem.len);
        self.grow(&mut st.scratch, 1, need)?;
        st.cache.cross = Some(mem);
        Ok(())
    }

    /// Cross-attention of the `n` queries in `sc.q` of layer `l`, each over its own sequence's
    /// encoder output (every position), into `sc.att`.
    fn cross_attention(
        &self,
        sc: &mut Scratch,
        caches: &[&mut Cache],
        l: usize,
        n: usize,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (h, hkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        for i in 0..n {
            match &caches[sc.owner[i]].cross {
                Some(m) if m.len <= sc.score_cap && m.len > 0 => {}
                Some(m) if m.len == 0 => {
                    return Err(Error::Input("an empty encoder output to attend to".into()))
                }
                Some(_) => return Err(Error::Input("internal: scores buffer too small".into())),
                None => {
                    return Err(Error::Input(
                        "a sequence of an encoder-decoder without its encoder output \
                         (Decoder::set_memory)"
                            .into(),
                    ))
                }
            }
        }
        let rep = h / hkv;
        let scale = self.att_scale;
        let (q, owner) = (&sc.q, &sc.owner);
        self.per_head_query(
            &mut sc.att,
            &mut sc.scores,
            sc.score_cap,
            n,
            &|head, i, sc, o| {
                let mem = caches[owner[i]].cross.as_deref().expect("checked above");
                let len = mem.len;
                let base = (l * hkv + head / rep) * len * d;
                let at = (i * h + head) * d;
                ca::attend(
                    &q[at..at + d],
                    &mem.k[base..base + len * d],
                    &mem.v[base..base + len * d],
                    len,
                    scale,
                    &mut sc[..len],
                    o,
                );
            },
        );
        Ok(())
    }

    /// Copy the new keys and values of layer `l` into each row's cache at the row's position.
    fn store_kv(&self, sc: &Scratch, caches: &mut [&mut Cache], l: usize, n: usize) {
        let (hkv, d) = (self.cfg.num_kv_heads, self.cfg.head_dim);
        for i in 0..n {
            let (p, cache) = (sc.pos[i], &mut *caches[sc.owner[i]]);
            let cap = cache.cap;
            for h in 0..hkv {
                let at = ((l * hkv + h) * cap + p) * d;
                let src = (i * hkv + h) * d;
                cache
                    .kv
                    .store(at, &sc.kn[src..src + d], &sc.vn[src..src + d]);
            }
        }
    }

    /// Causal attention of the `n` new queries of layer `l`, each over its own sequence's cache
    /// up to its position, into `sc.att`.
    fn attention(&self, sc: &mut Scratch, caches: &[&mut Cache], l: usize, n: usize) {
        let cfg = &self.cfg;
        let (h, hkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let rep = h / hkv;
        let scale = self.att_scale;
        let kern = self.f16;
        let rel = self.rel_bias.as_ref();
        let (q, q16, owner, pos) = (&sc.q, &sc.q16, &sc.owner, &sc.pos);
        self.per_head_query(
            &mut sc.att,
            &mut sc.scores,
            sc.score_cap,
            n,
            &|head, i, sc, o| {
                let cache = &*caches[owner[i]];
                let cap = cache.cap;
                let base = (l * hkv + head / rep) * cap * d;
                let at = (i * h + head) * d;
                let len = pos[i] + 1;
                match &cache.kv {
                    KvCache::F16 { k, v } => ca::attend_f16(
                        kern,
                        &q16[at..at + d],
                        &k[base..base + cap * d],
                        &v[base..base + cap * d],
                        len,
                        scale,
                        &mut sc[..cap],
                        o,
                    ),
                    KvCache::F32 { k, v } => ca::attend_biased(
                        &q[at..at + d],
                        &k[base..base + cap * d],
                        &v[base..base + cap * d],
                        len,
                        scale,
                        |j| rel.map_or(0.0, |r| r.at(head, len - 1, j)),
                        &mut sc[..cap],
                        o,
                    ),
                }
            },
        );
    }

    /// Run `f(head, query, scores, out)` for every (head, query) pair of `n` queries on the pool:
    /// tasks split the pairs by head and by query index mod [`ATT_SPLIT`]; each task has its
    /// own row of `score_cap` scores, and `out` is query `i`'s D values of head `head` in `att`.
    fn per_head_query(
        &self,
        att: &mut [f32],
        scores: &mut [f32],
        score_cap: usize,
        n: usize,
        f: &HeadQueryFn<'_>,
    ) {
        let (h, d) = (self.cfg.num_heads, self.cfg.head_dim);
        let split = n.min(ATT_SPLIT);
        let att = SharedMut::new(&mut att[..n * h * d]);
        let scores = SharedMut::new(scores);
        self.pool.run(h * split, &|task| {
            let (head, part) = (task / split, task % split);
            // SAFETY: task `task` owns score row `task`, and the output slices of its queries.
            let sc = unsafe { scores.range(task * score_cap, (task + 1) * score_cap) };
            for i in (part..n).step_by(split) {
                let at = (i * h + head) * d;
                // SAFETY: query i's slice of head `head` is written by this task alone (tasks
                // split the (head, query) pairs by head and by i mod `split`).
                let o = unsafe { att.range(at, at + d) };
                f(head, i, sc, o);
            }
        });
    }
}

/// The work of one (head, query) pair of [`Decoder::per_head_query`]: (head, query, scores, out).
type HeadQueryFn<'a> = dyn Fn(usize, usize, &mut [f32], &mut [f32]) + Sync + 'a;

/// `out[r] += b` for every row of `out` (rows of `b.len()`).
fn add_bias(out: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in out.chunks_exact_mut(b.len()) {
            ca::add_assign(row, b);
        }
    }
}
