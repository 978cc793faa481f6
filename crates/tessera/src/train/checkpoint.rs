//! Checkpoints: a Hugging Face-layout directory plus optimizer, schedule and RNG state.
//!
//! ```text
//! checkpoint/
//!   config.json            model config (Hugging Face names)
//!   model.safetensors      weights (Hugging Face names)
//!   tokenizer.json
//!   optimizer.safetensors  AdamW moments: "m.<name>", "v.<name>"
//!   trainer_state.json     step, optimizer step, RNG and data position, training config
//! ```
//! The directory is written beside its final place and renamed in, so a crash never leaves a
//! half-written checkpoint.

use super::data::BatcherState;
use super::TrainConfig;
use crate::models::{ParamStore, Transformer, TransformerConfig};
use crate::tokenizer::Tokenizer;
use crate::util::fs::{replace_dir, write_atomic};
use crate::util::rng::Rng;
use crate::weights::safetensors::{load_safetensors, safetensors_bytes};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the trainer state layout.
pub const STATE_VERSION: u32 = 1;

/// Everything besides tensors needed to resume exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub version: u32,
    /// Optimizer steps completed.
    pub step: usize,
    /// AdamW's step counter (bias correction).
    pub adam_step: u64,
    /// Dropout generator.
    pub rng: Rng,
    /// Data position.
    pub batcher: BatcherState,
    /// Training settings of the run.
    pub train_config: TrainConfig,
    /// Tokens consumed.
    pub tokens_seen: u64,
    /// Wall time spent training, seconds.
    pub elapsed_s: f64,
}

/// Write a checkpoint directory at `dir` atomically.
pub fn save(
    dir: &Path,
    cfg: &TransformerConfig,
    params: &ParamStore,
    tok: &Tokenizer,
    m: &[Tensor],
    v: &[Tensor],
    state: &TrainerState,
) -> Result<()> {
    write_dir(
        dir,
        &cfg.to_config_json(),
        &Transformer::safetensors_bytes(params)?,
        tok,
        params,
        (m, v),
        state,
    )
}

/// Write a checkpoint directory of any model at `dir` atomically: its `config.json`, its
/// `model.safetensors` bytes, the tokenizer, the AdamW moments of `params` and the trainer state.
pub fn write_dir(
    dir: &Path,
    config: &serde_json::Value,
    model: &[u8],
    tok: &Tokenizer,
    params: &ParamStore,
    (m, v): (&[Tensor], &[Tensor]),
    state: &impl Serialize,
) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write_atomic(
        &tmp.join("config.json"),
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;
    write_atomic(&tmp.join("model.safetensors"), model)?;
    write_atomic(&tmp.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    let mut moments = Vec::with_capacity(2 * m.len());
    for (spec, (mi, vi)) in params.specs.iter().zip(m.iter().zip(v)) {
        moments.push((format!("m.{}", spec.name), mi.clone()));
        moments.push((format!("v.{}", spec.name), vi.clone()));
    }
    write_atomic(
        &tmp.join("optimizer.safetensors"),
        &safetensors_bytes(&moments)?,
    )?;
    write_atomic(
        &tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    replace_dir(&tmp, dir)
}

/// The AdamW moments of `params` from a checkpoint directory's `optimizer.safetensors`.
pub fn read_moments(
    dir: &Path,
    params: &ParamStore,
    device: &Device,
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let opt_path = need(dir, "optimizer.safetensors")?;
    let opt = load_safetensors(&opt_path, device)?;
    let mut m = Vec::new();
    let mut v = Vec::new();
    for s in &params.specs {
        for (out, kind) in [(&mut m, "m"), (&mut v, "v")] {
            out.push(crate::models::params::fetch(
                &opt,
                &format!("{kind}.{}", s.name),
                &s.shape,
                &opt_path,
            )?);
        }
    }
    Ok((m, v))
}

/// A checkpoint directory's `trainer_state.json`.
pub fn read_state<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let state_path = need(dir, "trainer_state.json")?;
    serde_json::from_str(&crate::error::read_text(&state_path)?)
        .map_err(|e| Error::checkpoint(&state_path, format!("unreadable trainer state: {e}")))
}

/// A training checkpoint read back.
pub struct Loaded {
    pub cfg: TransformerConfig,
    pub params: ParamStore,
    pub tokenizer: Tokenizer,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub state: TrainerState,
}

fn need(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        return Err(Error::checkpoint(dir, format!("missing {name}")));
    }
    Ok(p)
}

/// Read a full training checkpoint.
pub fn load(dir: &Path, device: &Device) -> Result<Loaded> {
    if !dir.is_dir() {
        return Err(Error::checkpoint(dir, "no such checkpoint directory"));
    }
    let cfg = TransformerConfig::from_file(need(dir, "config.json")?)?;
    let st = need(dir, "model.safetensors")?;
    let params = ParamStore::from_tensors(&cfg, &load_safetensors(&st, device)?, DType::F32, &st)?;
    let tokenizer = Tokenizer::from_file(need(dir, "tokenizer.json")?)?;
    let (m, v) = read_moments(dir, &params, device)?;
    let state: TrainerState = read_state(dir)?;
    if state.version != STATE_VERSION {
        return Err(Error::checkpoint(
            dir.join("trainer_state.json"),
            format!("unsupported state version {}", state.version),
        ));
    }
    Ok(Loaded {
        cfg,
        params,
        tokenizer,
        m,
        v,
        state,
    })
}
