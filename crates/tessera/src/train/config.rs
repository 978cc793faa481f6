//! Training hyper-parameters, read from a config file's `"training"` section and overridden by flags.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Everything that shapes a training run except the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per micro-batch (B).
    pub batch_size: usize,
    /// Tokens per sequence (T).
    pub block_size: usize,
    /// Micro-batches summed per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Optimizer steps of the whole schedule.
    pub max_steps: usize,
    /// Decoupled weight decay (matrices only).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    /// Evaluate every N steps (0 = only at the end).
    pub eval_every: usize,
    /// At most this many validation batches per evaluation (0 = all).
    pub eval_batches: usize,
    /// Write a checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Fraction of the text held out for validation (taken from the end).
    pub val_fraction: f64,
    /// Vocabulary size when a tokenizer is trained for the run.
    pub vocab_size: usize,
    /// Seed for init, data order and dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 16,
            block_size: 128,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 100,
            max_steps: 2000,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 250,
            eval_batches: 0,
            checkpoint_every: 500,
            val_fraction: 0.05,
            vocab_size: 4096,
            seed: 1337,
        }
    }
}

impl TrainConfig {
    /// Check ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.block_size == 0 || self.grad_accum == 0 {
            return bad("batch_size, block_size and grad_accum must be positive".into());
        }
        if self.max_steps == 0 {
            return bad("max_steps must be positive".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 || self.min_lr > self.lr {
            return bad(format!(
                "need 0 <= min_lr <= lr and lr > 0 (lr {}, min_lr {})",
                self.lr, self.min_lr
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) || self.eps <= 0.0
        {
            return bad("betas must be in [0, 1) and eps > 0".into());
        }
        if !(0.0..0.9).contains(&self.val_fraction) || self.val_fraction <= 0.0 {
            return bad(format!(
                "val_fraction must be in (0, 0.9), got {}",
                self.val_fraction
            ));
        }
        if self.weight_decay < 0.0 || self.grad_clip < 0.0 {
            return bad("weight_decay and grad_clip must be >= 0".into());
        }
        Ok(())
    }

    /// Parse the `"training"` object of a config file (absent = defaults).
    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        let t = match v.get("training") {
            None => TrainConfig::default(),
            Some(t) => serde_json::from_value(t.clone())
                .map_err(|e| Error::Config(format!("\"training\" section: {e}")))?,
        };
        t.validate()?;
        Ok(t)
    }

    /// Tokens consumed by one optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.block_size * self.grad_accum
    }
}
