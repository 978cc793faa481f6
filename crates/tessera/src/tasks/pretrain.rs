//! Masked-language-model pretraining of an encoder on the training texts themselves, before it
//! learns its task: BERT's objective (15% of the tokens chosen; of those 80% become `[MASK]`,
//! 10% a random token, 10% stay; the model predicts the originals) with a transform + LayerNorm
//! head whose decoder is tied to the word embeddings. The head is dropped afterwards; only the
//! encoder's weights carry over. For small data trained from scratch this is what lifts a
//! transformer above a bag-of-n-grams baseline.

use crate::models::encoder::{BlockDropout, Packed};
use crate::models::params::{Init, ParamSpec};
use crate::models::ParamStore;
use crate::models::{Transformer, TransformerConfig};
use crate::nn::{Linear, Norm};
use crate::train::data::{epoch_batches, EpochCursor};
use crate::train::optim::AdamW;
use crate::train::run::{EvalAt, Micro, Objective, Observer, Plan, RunState, Shard};
use crate::train::Schedule;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{Device, Tensor, Var};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Settings of [`pretrain_mlm`].
#[derive(Clone, Debug)]
pub struct MlmOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (linear warmup then linear decay to 0).
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Fraction of the (non-special) tokens to predict.
    pub mask_prob: f64,
    /// Dropout on hidden states and attention weights.
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    /// Batch sequences of similar length together.
    pub group_by_length: bool,
}

/// Token ids the masking must know: never-masked specials, the mask id.
#[derive(Clone, Debug)]
pub struct MlmTokens {
    pub mask: u32,
    /// Ids never chosen for prediction nor drawn as random replacements ([PAD], [CLS], …).
    pub special: Vec<u32>,
}

/// The MLM head's parameters (`cls.predictions.*`, Hugging Face `BertForMaskedLM` names).
fn head_specs(cfg: &TransformerConfig) -> Vec<ParamSpec> {
    let c = cfg.hidden_size;
    let spec = |name: &str, shape: Vec<usize>, init: Init, decay: bool| ParamSpec {
        name: name.into(),
        shape,
        init,
        decay,
    };
    vec![
        spec(
            "cls.predictions.transform.dense.weight",
            vec![c, c],
            Init::Normal(cfg.initializer_range),
            true,
        ),
        spec(
            "cls.predictions.transform.dense.bias",
            vec![c],
            Init::Zeros,
            false,
        ),
        spec(
            "cls.predictions.transform.LayerNorm.weight",
            vec![c],
            Init::Ones,
            false,
        ),
        spec(
            "cls.predictions.transform.LayerNorm.bias",
            vec![c],
            Init::Zeros,
            false,
        ),
        spec(
            "cls.predictions.bias",
            vec![cfg.vocab_size],
            Init::Zeros,
            false,
        ),
    ]
}

/// A masked copy of `ids` and the (position, original id) pairs to predict.
fn mask_sequence(
    ids: &[u32],
    tokens: &MlmTokens,
    vocab: usize,
    prob: f64,
    rng: &mut Rng,
) -> (Vec<u32>, Vec<(usize, u32)>) {
    let mut out = ids.to_vec();
    let candidates: Vec<usize> = (0..ids.len())
        .filter(|&i| !tokens.special.contains(&ids[i]))
        .collect();
    let mut chosen: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|_| rng.uniform() < prob)
        .collect();
    if chosen.is_empty() && !candidates.is_empty() {
        chosen.push(candidates[rng.below(candidates.len())]);
    }
    let mut targets = Vec::with_capacity(chosen.len());
    for i in chosen {
        targets.push((i, ids[i]));
        let r = rng.uniform();
        out[i] = if r < 0.8 {
            tokens.mask
        } else if r < 0.9 {
            loop {
                let t = rng.below(vocab) as u32;
                if !tokens.special.contains(&t) {
                    break t;
                }
            }
        } else {
            ids[i]
        };
    }
    (out, targets)
}

/// Pretrain the encoder whose weights are the `bert.*` entries of `params` (updated in place)
/// with masked language modelling on `seqs` (token ids with `[CLS]` … `[SEP]`), with the one
/// training loop. Returns the mean training loss of each finished epoch; `obs` sees every step
/// and epoch.
#[allow(clippy::too_many_arguments)]
pub fn pretrain_mlm(
    cfg: &TransformerConfig,
    params: &ParamStore,
    seqs: &[Vec<u32>],
    tokens: &MlmTokens,
    opts: &MlmOptions,
    rng: &mut Rng,
    interrupt: Option<&AtomicBool>,
    obs: &mut dyn Observer,
) -> Result<Vec<f64>> {
    if opts.epochs == 0 || opts.batch_size == 0 || opts.lr.is_nan() || opts.lr <= 0.0 {
        return Err(Error::Input(
            "MLM pretraining: epochs, batch size and learning rate must be positive".into(),
        ));
    }
    if !(opts.mask_prob > 0.0 && opts.mask_prob < 1.0) {
        return Err(Error::Input(format!(
            "MLM pretraining: mask probability must be in (0, 1), got {}",
            opts.mask_prob
        )));
    }
    let seqs: Vec<&Vec<u32>> = seqs.iter().filter(|s| s.len() > 2).collect();
    if seqs.is_empty() {
        return Err(Error::Input(
            "MLM pretraining: no training text has a token to predict".into(),
        ));
    }
    let device = Device::Cpu;
    // The encoder's parameters (not the pooler or the task head: MLM gives them no gradient)
    // and the MLM head's, in one store for the optimizer.
    let mut store = ParamStore {
        specs: Vec::new(),
        vars: Vec::new(),
    };
    for (s, v) in params.specs.iter().zip(&params.vars) {
        if s.name.starts_with("bert.") && !s.name.starts_with("bert.pooler.") {
            store.specs.push(s.clone());
            store.vars.push(v.clone());
        }
    }
    for s in head_specs(cfg) {
        store
            .vars
            .push(Var::from_tensor(&s.init_tensor(rng, &device)?)?);
        store.specs.push(s);
    }
    let t = store.tensors();
    let bert = Transformer::from_tensors_prefixed(cfg, &t, "bert.", Path::new("<parameters>"))?;
    let get = |n: &str| {
        t.get(n)
            .cloned()
            .ok_or_else(|| Error::Input(format!("internal: no parameter '{n}'")))
    };
    let transform = Linear::new(
        get("cls.predictions.transform.dense.weight")?,
        Some(get("cls.predictions.transform.dense.bias")?),
    );
    let norm = Norm::LayerNorm {
        weight: get("cls.predictions.transform.LayerNorm.weight")?,
        bias: get("cls.predictions.transform.LayerNorm.bias")?,
        eps: cfg.norm_eps,
    };
    let decoder = Linear::new(
        get("bert.embeddings.word_embeddings.weight")?,
        Some(get("cls.predictions.bias")?),
    );

    let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    let total = seqs.len().div_ceil(opts.batch_size) * opts.epochs;
    let warmup = (total as f64 * opts.warmup_ratio).round() as usize;
    let mut opt = AdamW::new(&store, 0.9, 0.999, 1e-8, opts.weight_decay)?;
    let mut obj = MlmObjective {
        store: &store,
        bert: &bert,
        transform: &transform,
        norm: &norm,
        decoder: &decoder,
        cfg,
        seqs: &seqs,
        lens,
        tokens,
        opts,
        cursor: EpochCursor::default(),
        device,
    };
    let plan = Plan {
        schedule: Schedule::Linear {
            lr: opts.lr,
            warmup,
            total,
        },
        max_steps: total,
        epochs: opts.epochs,
        grad_accum: 1,
        grad_clip: opts.grad_clip,
        eval: EvalAt::Never,
        patience: 0,
        max_time: None,
        stop: interrupt,
        metrics: None,
        comm: crate::dist::world(),
    };
    let mut losses = EpochLosses {
        losses: Vec::new(),
        inner: obs,
    };
    crate::train::run::run(
        &mut obj,
        &mut opt,
        rng,
        &mut RunState::default(),
        &plan,
        &mut losses,
    )?;
    Ok(losses.losses)
}

/// Collects each epoch's mean loss on the way to the caller's observer.
struct EpochLosses<'a> {
    losses: Vec<f64>,
    inner: &'a mut dyn Observer,
}

impl Observer for EpochLosses<'_> {
    fn on_step(&mut self, s: &crate::train::StepStats) {
        self.inner.on_step(s);
    }
    fn on_epoch(&mut self, epoch: usize, loss: f64, items_per_s: f64) {
        self.losses.push(loss);
        self.inner.on_epoch(epoch, loss, items_per_s);
    }
}

/// Masked language modelling as an [`Objective`] of the one loop.
struct MlmObjective<'a> {
    store: &'a ParamStore,
    bert: &'a Transformer,
    transform: &'a Linear,
    norm: &'a Norm,
    decoder: &'a Linear,
    cfg: &'a TransformerConfig,
    seqs: &'a [&'a Vec<u32>],
    lens: Vec<usize>,
    tokens: &'a MlmTokens,
    opts: &'a MlmOptions,
    cursor: EpochCursor,
    device: Device,
}

impl Objective for MlmObjective<'_> {
    fn params(&self) -> &ParamStore {
        self.store
    }

    fn items_name(&self) -> &'static str {
        "examples"
    }

    fn start_epoch(&mut self, epoch: usize, rng: &mut Rng) -> Result<()> {
        let o = self.opts;
        let batches = epoch_batches(&self.lens, o.batch_size, o.group_by_length, rng);
        self.cursor.start(epoch, batches);
        Ok(())
    }

    fn next_micro(&mut self, rng: &mut Rng, shard: Shard) -> Result<Option<Micro>> {
        let Some(chunk) = self.cursor.next_batch() else {
            return Ok(None);
        };
        let (cfg, opts, device) = (self.cfg, self.opts, &self.device);
        // Every rank masks the whole batch (the same draws), then trains on its rows.
        let mut masked = Vec::with_capacity(chunk.len());
        let mut targets = Vec::new();
        for &i in chunk {
            let (m, t) = mask_sequence(
                self.seqs[i],
                self.tokens,
                cfg.vocab_size,
                opts.mask_prob,
                rng,
            );
            masked.push(m);
            targets.push(t);
        }
        let part = shard.range(chunk.len());
        let mut drop_rng = shard.dropout_rng(rng);
        let refs: Vec<&[u32]> = masked[part.clone()].iter().map(Vec::as_slice).collect();
        let targets = &targets[part];
        if targets.iter().all(Vec::is_empty) {
            return Micro::empty().map(Some); // no rows, or none masked
        }
        let packed = Packed::new(&refs, device)?;
        let (mut rows, mut y) = (Vec::new(), Vec::new());
        for (b, ts) in targets.iter().enumerate() {
            for &(i, id) in ts {
                rows.push(packed.row(b, i) as u32);
                y.push(id);
            }
        }
        let mut drop = BlockDropout {
            hidden: opts.hidden_dropout,
            attention: opts.attention_dropout,
            rng: &mut drop_rng,
        };
        let h = self.bert.encode_packed(&packed, Some(&mut drop))?; // (N, C)
        let h = h.index_select(&Tensor::new(rows.as_slice(), device)?, 0)?; // (R, C)
        let x = crate::nn::mlp::activate(&self.transform.forward(&h)?, cfg.activation)?;
        let logits = self.decoder.forward(&self.norm.forward(&x)?)?; // (R, V)
        let loss = crate::nn::loss::cross_entropy(&logits, &Tensor::new(y.as_slice(), device)?)?;
        Ok(Some(Micro {
            loss,
            items: refs.len(),
            terms: y.len(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_specials_and_marks_targets() {
        let tokens = MlmTokens {
            mask: 4,
            special: vec![0, 1, 2, 3, 4],
        };
        let mut rng = Rng::new(3);
        let ids: Vec<u32> = std::iter::once(2)
            .chain((0..2000).map(|i| 5 + (i % 50)))
            .chain(std::iter::once(3))
            .collect();
        let (m, t) = mask_sequence(&ids, &tokens, 60, 0.15, &mut rng);
        assert_eq!((m[0], m[m.len() - 1]), (2, 3));
        let frac = t.len() as f64 / 2000.0;
        assert!((0.12..0.18).contains(&frac), "{frac}");
        let masked = t.iter().filter(|&&(i, _)| m[i] == 4).count() as f64 / t.len() as f64;
        assert!((0.7..0.9).contains(&masked), "{masked}");
        for (i, orig) in t {
            assert_eq!(ids[i], orig);
            assert!(m[i] >= 4);
        }
        // A short sequence still gets one target.
        let (_, t) = mask_sequence(&[2, 9, 3], &tokens, 60, 0.01, &mut rng);
        assert_eq!(t.len(), 1);
    }
}
