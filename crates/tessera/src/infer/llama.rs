//! `QuantLlama`: the Llama-family decoder run straight on a GGUF file's quantized weights.
//!
//! ```text
//! x = embed[ids]                                   (n, C)   rows dequantized from the file
//! for each layer:
//!     h = rms_norm(x) ; q, k, v = h Wq^T, h Wk^T, h Wv^T ; rotary on q, k
//!     append k, v to the cache ; x += attend(q, cache) Wo^T
//!     h = rms_norm(x) ; x += (silu(h Wg^T) * h Wu^T) Wd^T
//! logits = rms_norm(x_last) Whead^T                (V)
//! ```
//!
//! Weights stay in their GGML block format and point into the memory-mapped file (nothing is
//! dequantized at load). Products quantize the activations to 8 bits per block, as llama.cpp
//! does, and run on a [`HotPool`]. The KV cache is preallocated for the state's capacity and read
//! in place; keys and values are kept in f16 (llama.cpp's default), the query and the attention
//! weights rounded to f16 for their products as ggml does. A decode step allocates nothing.
//!
//! The rows of Q and K are copied at load from GGUF's interleaved rotary order (llama.cpp's
//! converter interleaves each head's halves) to Hugging Face's half-split order, so the one
//! rotary kernel ([`rotary`]) serves every model.

use crate::kernels::cache_attention::{self as ca, F16Kernels};
use crate::kernels::norm::normalize_row;
use crate::kernels::quant::{matvec_many, QMatrix, QType};
use crate::kernels::rotary;
use crate::models::gguf_loader::config_from_gguf;
use crate::models::ModelConfig;
use crate::models::PositionKind;
use crate::util::pool::{HotPool, SharedMut};
use crate::weights::{ggml_type_name, Gguf};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Prompt tokens processed per forward pass (longer prompts go in chunks of this many).
const PREFILL_CHUNK: usize = 256;

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

/// A Llama-family model on quantized weights. See the module documentation.
pub struct QuantLlama {
    /// The model's configuration (Hugging Face names).
    pub cfg: ModelConfig,
    embed: QMatrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    head: QMatrix,
    /// Rotary base θ (angles as llama.cpp computes them, [`rotary::angles_ggml`]).
    theta: f64,
    f16: F16Kernels,
    pool: HotPool,
    path: PathBuf,
}

/// The KV cache and scratch buffers of one sequence.
pub struct State {
    pos: usize,
    cap: usize,
    /// (layers, kv heads, cap, D), f16 bits (as llama.cpp's default cache).
    k: Vec<u16>,
    v: Vec<u16>,
    /// Scratch sized for `rows` tokens.
    rows: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    /// `q` rounded to f16.
    q16: Vec<u16>,
    kn: Vec<f32>,
    vn: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// (rows, D) rotary cos/sin per token.
    cs: Vec<f32>,
    /// One row of `cap` scores per attention task.
    scores: Vec<f32>,
    logits: Vec<f32>,
}

impl State {
    /// Tokens already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Forget the sequence (the buffers are kept).
    pub fn clear(&mut self) {
        self.pos = 0;
    }

    /// Drop cached positions from `len` on (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }
}

/// Attention tasks per query head in a prefill pass (queries split round-robin).
const ATT_SPLIT: usize = 4;

impl QuantLlama {
    /// Open a GGUF file and build the model on its quantized tensors (memory-mapped).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?)
    }

    /// Build the model on the tensors of `g` (shares its bytes; nothing is copied).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let cfg = config_from_gguf(g)?;
        let theta = match cfg.position {
            PositionKind::Rotary { theta } => theta,
            PositionKind::Learned => return Err(g.error("expected rotary positions")),
        };
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
        let unpermute = |m: QMatrix| -> Result<QMatrix> {
            m.permute_rows(|r| rotary::gguf_row(r, d))
                .map_err(|e| g.error(e.to_string()))
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let m = matrix(name, 1, len)?;
            Ok(m.dequantize())
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(Layer {
                attn_norm: vector(&n("attn_norm"), c)?,
                // Q and K rows from GGUF's interleaved rotary order to the half-split one.
                wq: unpermute(matrix(&n("attn_q"), qd, c)?)?,
                wk: unpermute(matrix(&n("attn_k"), kvd, c)?)?,
                wv: matrix(&n("attn_v"), kvd, c)?,
                wo: matrix(&n("attn_output"), c, qd)?,
                ffn_norm: vector(&n("ffn_norm"), c)?,
                gate: matrix(&n("ffn_gate"), ff, c)?,
                up: matrix(&n("ffn_up"), ff, c)?,
                down: matrix(&n("ffn_down"), c, ff)?,
            });
        }
        let embed = matrix("token_embd.weight", cfg.vocab_size, c)?;
        let head = if g.tensor("output.weight").is_some() {
            matrix("output.weight", cfg.vocab_size, c)?
        } else {
            embed.clone()
        };
        Ok(QuantLlama {
            norm: vector("output_norm.weight", c)?,
            theta,
            f16: F16Kernels::detect(),
            pool: HotPool::from_env(),
            path: g.path().to_path_buf(),
            cfg,
            embed,
            layers,
            head,
        })
    }

    /// The same model with every matrix dequantized to F32 (f32 activations, no 8-bit rounding):
    /// the arithmetic of the Hugging Face reference, for tests and accuracy comparisons. Takes
    /// about 4 bytes per parameter.
    pub fn dequantized(&self) -> Result<QuantLlama> {
        let f = |m: &QMatrix| -> Result<QMatrix> {
            let bytes: Vec<u8> = m
                .dequantize()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            QMatrix::new(QType::F32, m.rows(), m.cols(), bytes)
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    attn_norm: l.attn_norm.clone(),
                    wq: f(&l.wq)?,
                    wk: f(&l.wk)?,
                    wv: f(&l.wv)?,
                    wo: f(&l.wo)?,
                    ffn_norm: l.ffn_norm.clone(),
                    gate: f(&l.gate)?,
                    up: f(&l.up)?,
                    down: f(&l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QuantLlama {
            cfg: self.cfg.clone(),
            embed: f(&self.embed)?,
            layers,
            norm: self.norm.clone(),
            head: f(&self.head)?,
            theta: self.theta,
            f16: self.f16,
            pool: HotPool::new(self.pool.threads()),
            path: self.path.clone(),
        })
    }

    /// The file the weights come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Threads the products run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// A fresh sequence state holding up to `capacity` positions (at most the model's context).
    /// The cache is allocated at once but only the pages of positions used are touched; when
    /// the memory is not there, the error says how much was asked for.
    pub fn new_state(&self, capacity: usize) -> Result<State> {
        use crate::util::alloc::zeroed;
        let cfg = &self.cfg;
        let cap = capacity.clamp(1, cfg.max_position_embeddings.max(1));
        let kv = [cfg.num_layers, cfg.num_kv_heads, cap, cfg.head_dim]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::Input(format!("a KV cache of {cap} positions is too large")))?;
        let what = format!("KV cache for {cap} positions");
        let mut st = State {
            pos: 0,
            cap,
            k: zeroed(kv, &what)?,
            v: zeroed(kv, &what)?,
            rows: 0,
            x: Vec::new(),
            h: Vec::new(),
            q: Vec::new(),
            q16: Vec::new(),
            kn: Vec::new(),
            vn: Vec::new(),
            att: Vec::new(),
            tmp: Vec::new(),
            gate: Vec::new(),
            up: Vec::new(),
            cs: Vec::new(),
            scores: zeroed(cfg.num_heads * ATT_SPLIT * cap, "attention scores")?,
            logits: zeroed(cfg.vocab_size, "logits")?,
        };
        self.grow(&mut st, 1);
        Ok(st)
    }

    fn grow(&self, st: &mut State, rows: usize) {
        if st.rows >= rows {
            return;
        }
        let cfg = &self.cfg;
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd, ff) = (
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.intermediate_size,
        );
        for (buf, width) in [
            (&mut st.x, c),
            (&mut st.h, c),
            (&mut st.q, qd),
            (&mut st.kn, kvd),
            (&mut st.vn, kvd),
            (&mut st.att, qd),
            (&mut st.tmp, c.max(qd)),
            (&mut st.gate, ff),
            (&mut st.up, ff),
            (&mut st.cs, d),
        ] {
            buf.resize(rows * width, 0.0);
        }
        st.q16.resize(rows * qd, 0);
        st.rows = rows;
    }

    /// Feed `ids` after what `st` holds; returns the logits (V) of the last one.
    ///
    /// Errors (leaving `st` unchanged) on an empty input, an id outside the vocabulary, or when
    /// the cache would overflow its capacity.
    pub fn forward<'s>(&self, st: &'s mut State, ids: &[u32]) -> Result<&'s [f32]> {
        self.check(st, ids)?;
        let mut last = 0;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            self.forward_chunk(st, chunk);
            last = chunk.len();
        }
        self.logits_of_last(st, last);
        Ok(&st.logits)
    }

    /// Feed `ids` and return the logits of every one of them, (n, V) row-major (for evaluation
    /// and tests).
    pub fn forward_all(&self, st: &mut State, ids: &[u32]) -> Result<Vec<f32>> {
        self.check(st, ids)?;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let mut out = vec![0f32; ids.len() * v];
        let mut done = 0;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            self.forward_chunk(st, chunk);
            let n = chunk.len();
            for i in 0..n {
                let (x, h) = (&st.x[i * c..(i + 1) * c], &mut st.h[i * c..(i + 1) * c]);
                normalize_row(h, x, &self.norm, None, self.cfg.norm_eps as f32, true);
            }
            let o = &mut out[done * v..(done + n) * v];
            self.head.matmul_on(&self.pool, &st.h[..n * c], n, o)?;
            done += n;
        }
        Ok(out)
    }

    fn check(&self, st: &State, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Input("no tokens to feed".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        if st.pos + ids.len() > st.cap {
            return Err(Error::Input(format!(
                "{} + {} tokens exceed the context of {} positions",
                st.pos,
                ids.len(),
                st.cap
            )));
        }
        Ok(())
    }

    /// Final norm and head on the last row of the chunk just processed.
    fn logits_of_last(&self, st: &mut State, n_last_chunk: usize) {
        let c = self.cfg.hidden_size;
        let i = n_last_chunk - 1;
        let (x, h) = (&st.x[i * c..(i + 1) * c], &mut st.h[..c]);
        normalize_row(h, x, &self.norm, None, self.cfg.norm_eps as f32, true);
        let h = &st.h[..c];
        self.head
            .matmul_on(&self.pool, h, 1, &mut st.logits)
            .expect("head sizes are fixed at load");
    }

    /// Run `ids` (at most `PREFILL_CHUNK`, checked) through every layer, leaving the final hidden
    /// states (before the last norm) in `st.x` and the keys/values in the cache.
    fn forward_chunk(&self, st: &mut State, ids: &[u32]) {
        let n = ids.len();
        self.grow(st, n);
        let cfg = &self.cfg;
        let (c, d) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd, ff) = (
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.intermediate_size,
        );
        let eps = cfg.norm_eps as f32;
        let pos = st.pos;
        for (i, &id) in ids.iter().enumerate() {
            self.embed
                .dequantize_row(id as usize, &mut st.x[i * c..(i + 1) * c]);
            rotary::angles_ggml(pos + i, d, self.theta, &mut st.cs[i * d..(i + 1) * d]);
        }
        let pool = &self.pool;
        let mm = |m: &QMatrix, x: &[f32], out: &mut [f32]| {
            m.matmul_on(pool, x, n, out)
                .expect("matrix sizes are checked at load");
        };
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention.
            for i in 0..n {
                normalize_row(
                    &mut st.h[i * c..(i + 1) * c],
                    &st.x[i * c..(i + 1) * c],
                    &layer.attn_norm,
                    None,
                    eps,
                    true,
                );
            }
            let (q, kn, vn) = (
                &mut st.q[..n * qd],
                &mut st.kn[..n * kvd],
                &mut st.vn[..n * kvd],
            );
            if n == 1 {
                matvec_many(
                    pool,
                    &st.h[..c],
                    &mut [(&layer.wq, q), (&layer.wk, kn), (&layer.wv, vn)],
                )
                .expect("matrix sizes are checked at load");
            } else {
                mm(&layer.wq, &st.h[..n * c], q);
                mm(&layer.wk, &st.h[..n * c], kn);
                mm(&layer.wv, &st.h[..n * c], vn);
            }
            for i in 0..n {
                let cs = &st.cs[i * d..(i + 1) * d];
                rotary::rotate(&mut st.q[i * qd..(i + 1) * qd], d, cs);
                rotary::rotate(&mut st.kn[i * kvd..(i + 1) * kvd], d, cs);
            }
            ca::to_f16(&st.q[..n * qd], &mut st.q16[..n * qd]);
            self.store_kv(st, l, n);
            self.attention(st, l, n);
            mm(&layer.wo, &st.att[..n * qd], &mut st.tmp[..n * c]);
            ca::add_assign(&mut st.x[..n * c], &st.tmp[..n * c]);
            // MLP.
            for i in 0..n {
                normalize_row(
                    &mut st.h[i * c..(i + 1) * c],
                    &st.x[i * c..(i + 1) * c],
                    &layer.ffn_norm,
                    None,
                    eps,
                    true,
                );
            }
            let (g, u) = (&mut st.gate[..n * ff], &mut st.up[..n * ff]);
            if n == 1 {
                matvec_many(pool, &st.h[..c], &mut [(&layer.gate, g), (&layer.up, u)])
                    .expect("matrix sizes are checked at load");
            } else {
                mm(&layer.gate, &st.h[..n * c], g);
                mm(&layer.up, &st.h[..n * c], u);
            }
            cfg.activation
                .apply_gated(&mut st.gate[..n * ff], &st.up[..n * ff]);
            mm(&layer.down, &st.gate[..n * ff], &mut st.tmp[..n * c]);
            ca::add_assign(&mut st.x[..n * c], &st.tmp[..n * c]);
        }
        st.pos += n;
    }

    /// Copy the new keys and values of layer `l` into the cache at positions `pos..pos + n`.
    fn store_kv(&self, st: &mut State, l: usize, n: usize) {
        let (hkv, d, cap) = (self.cfg.num_kv_heads, self.cfg.head_dim, st.cap);
        for i in 0..n {
            let p = st.pos + i;
            for h in 0..hkv {
                let at = ((l * hkv + h) * cap + p) * d;
                let src = (i * hkv + h) * d;
                ca::to_f16(&st.kn[src..src + d], &mut st.k[at..at + d]);
                ca::to_f16(&st.vn[src..src + d], &mut st.v[at..at + d]);
            }
        }
    }

    /// Causal attention of the `n` new queries of layer `l` over the cache, into `st.att`.
    fn attention(&self, st: &mut State, l: usize, n: usize) {
        let cfg = &self.cfg;
        let (h, hkv, d, cap) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, st.cap);
        let rep = h / hkv;
        let split = n.min(ATT_SPLIT);
        let scale = 1.0 / (d as f32).sqrt();
        let pos = st.pos;
        let (q, k, v) = (&st.q16, &st.k, &st.v);
        let kern = self.f16;
        let att = SharedMut::new(&mut st.att[..n * h * d]);
        let scores = SharedMut::new(&mut st.scores);
        self.pool.run(h * split, &|task| {
            let (head, part) = (task / split, task % split);
            let kv = (l * hkv + head / rep) * cap * d;
            let (kc, vc) = (&k[kv..kv + cap * d], &v[kv..kv + cap * d]);
            // SAFETY: task `task` owns score row `task`, and the output slices of its queries.
            let sc = unsafe { scores.range(task * cap, (task + 1) * cap) };
            for i in (part..n).step_by(split) {
                let qi = &q[(i * h + head) * d..(i * h + head + 1) * d];
                // SAFETY: query i's slice of head `head` is written by this task alone (tasks
                // split the (head, query) pairs by head and by i mod `split`).
                let o = unsafe { att.range((i * h + head) * d, (i * h + head + 1) * d) };
                ca::attend_f16(kern, qi, kc, vc, pos + i + 1, scale, sc, o);
            }
        });
    }
}
