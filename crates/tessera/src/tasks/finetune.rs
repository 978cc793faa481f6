//! Fine-tuning an encoder with a classification head (texts) or a token head (NER): AdamW with
//! decay groups, linear warmup then linear decay, gradient clipping, dropout, an evaluation on
//! the dev set each epoch (accuracy / macro-F1, or seqeval entity F1), early stopping, and the
//! best model kept in Hugging Face layout.
//!
//! The encoder is either a pretrained directory (fine-tuning) or a BERT config file (training
//! from scratch: a WordPiece tokenizer is trained on the training texts, the weights are
//! initialized randomly; see [`super::scratch`]). Both save the same directory layout.

use super::classify::{Classifier, HeadKind};
use super::data::{check_known, label_set, Labelled, Tagged};
use super::pretrain::{pretrain_mlm, MlmOptions, MlmTokens};
use super::scratch::{is_scratch_config, scratch_encoder, ScratchTokenizer};
use super::tag::encode_words;
use crate::models::encoder::{BlockDropout, Packed};
use crate::train::data::{epoch_batches, EpochCursor};
use crate::train::optim::AdamW;
use crate::train::run::{EvalAt, Evaluation, Micro, Objective, Plan, RunState, Shard};
use crate::train::Schedule;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Fine-tuning settings (defaults follow the usual BERT recipe).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FinetuneOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay on projection matrices (not biases, norms or embeddings).
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up linearly; then linear decay to 0.
    pub warmup_ratio: f64,
    /// Longest input in tokens (special tokens included); longer inputs are truncated.
    pub max_len: usize,
    /// Which part of an over-long text is kept (text classification only).
    pub truncation: super::Truncation,
    pub seed: u64,
    /// Stop after this many epochs without a better dev score (0 = never stop early).
    pub patience: usize,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Dropout override (`None`: the model config's rates).
    pub dropout: Option<f32>,
    /// Stop after this many optimizer steps (`None`: all epochs).
    pub max_steps: Option<usize>,
    /// From scratch: the tokenizer's target vocabulary size (`None`: the config's `vocab_size`,
    /// else [`super::scratch::DEFAULT_VOCAB_SIZE`]).
    pub vocab_size: Option<usize>,
    /// From scratch: use this `tokenizer.json` instead of training one.
    pub tokenizer: Option<std::path::PathBuf>,
    /// From scratch: keep case and accents in the trained tokenizer (default: lowercase).
    pub cased: bool,
    /// From scratch: let the trained tokenizer learn multi-character CJK pieces instead of
    /// splitting CJK text into characters.
    pub cjk_words: bool,
    /// Batch examples of similar length together (shuffled groups of 50 batches sorted by
    /// length, the batches then shuffled): less padding, the same examples each epoch.
    pub group_by_length: bool,
    /// Epochs of masked-language-model pretraining on the training texts before the task
    /// (0 = none); see [`super::pretrain`].
    pub mlm_epochs: usize,
    /// Peak learning rate of the MLM pretraining.
    pub mlm_lr: f64,
    /// More unlabelled texts for the MLM pretraining (one per line, or JSONL with `text`), used
    /// besides the training texts; from scratch the tokenizer is trained on them too.
    pub mlm_data: Option<std::path::PathBuf>,
}

impl FinetuneOptions {
    /// The defaults for training an encoder from scratch: masked-LM pretraining on the training
    /// texts first (10 epochs at 1e-3), then the task at a higher learning rate than
    /// fine-tuning, with more dropout and weight decay, in batches grouped by length.
    pub fn scratch() -> Self {
        FinetuneOptions {
            epochs: 4,
            batch_size: 32,
            lr: 5e-4,
            weight_decay: 0.05,
            dropout: Some(0.2),
            warmup_ratio: 0.06,
            patience: 2,
            group_by_length: true,
            mlm_epochs: 10,
            mlm_lr: 1e-3,
            ..Default::default()
        }
    }
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            epochs: 3,
            batch_size: 16,
            lr: 5e-5,
            weight_decay: 0.01,
            warmup_ratio: 0.1,
            max_len: 128,
            truncation: super::Truncation::Head,
            seed: 42,
            patience: 2,
            grad_clip: 1.0,
            dropout: None,
            max_steps: None,
            vocab_size: None,
            tokenizer: None,
            cased: false,
            cjk_words: false,
            group_by_length: false,
            mlm_epochs: 0,
            mlm_lr: 1e-3,
            mlm_data: None,
        }
    }
}

/// Training and dev data of one task.
pub enum TaskData {
    /// Labelled texts.
    Classify {
        train: Vec<Labelled>,
        dev: Vec<Labelled>,
    },
    /// Sentences of BIO-tagged words.
    Ner {
        train: Vec<Tagged>,
        dev: Vec<Tagged>,
    },
}

/// What happened, for progress display.
pub enum Event<'a> {
    /// Training from scratch: the encoder built (before [`Event::Start`]).
    Scratch {
        /// Vocabulary size of the tokenizer (trained or given).
        vocab_size: usize,
        /// Whether the tokenizer was trained on the training texts.
        tokenizer_trained: bool,
        /// Number of trainable parameters.
        parameters: usize,
    },
    /// Before the first step.
    Start {
        total_steps: usize,
        train: usize,
        dev: usize,
        labels: &'a [String],
    },
    /// After each MLM pretraining step.
    Pretrain {
        step: usize,
        total: usize,
        loss: f64,
        lr: f64,
    },
    /// After each MLM pretraining epoch: its mean loss.
    PretrainEpoch {
        epoch: usize,
        loss: f64,
        examples_per_s: f64,
    },
    /// After each optimizer step.
    Step {
        step: usize,
        total: usize,
        loss: f64,
        lr: f64,
    },
    /// After each evaluation.
    Epoch(&'a EpochReport),
}

/// One epoch's results.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    pub dev_loss: f64,
    /// Accuracy (texts) or entity micro-F1 (NER): what early stopping watches.
    pub score: f64,
    /// The metrics report (tessera-metrics' classification or seqeval report).
    pub dev: Value,
    /// Whether this epoch's model was the best so far (and saved).
    pub best: bool,
    pub train_examples_per_s: f64,
}

/// A tokenized example: ids and either a class or per-token targets (`u32::MAX` = ignored),
/// with the first-piece positions of its words for NER.
struct Example {
    ids: Vec<u32>,
    class: u32,
    targets: Vec<u32>,
    firsts: Vec<Option<usize>>,
}

const IGNORE: u32 = u32::MAX;

fn prepare(
    kind: HeadKind,
    model: &Classifier,
    data: &TaskData,
    labels: &[String],
) -> Result<(Vec<Example>, Vec<Example>)> {
    let index = |l: &str| {
        labels
            .binary_search_by(|k| k.as_str().cmp(l))
            .map(|i| i as u32)
    };
    let texts = |v: &[Labelled]| -> Result<Vec<Example>> {
        v.iter()
            .map(|e| {
                let class = index(&e.label)
                    .map_err(|_| Error::Input(format!("unknown label '{}'", e.label)))?;
                Ok(Example {
                    ids: model.encode(&e.text)?,
                    class,
                    targets: vec![],
                    firsts: vec![],
                })
            })
            .collect()
    };
    let tagged = |v: &[Tagged]| -> Result<Vec<Example>> {
        v.iter()
            .map(|s| {
                let (ids, firsts) = encode_words(&model.tokenizer, &s.words)?;
                let mut targets = vec![IGNORE; ids.len()];
                for (f, tag) in firsts.iter().zip(&s.tags) {
                    if let Some(p) = f {
                        targets[*p] =
                            index(tag).map_err(|_| Error::Input(format!("unknown tag '{tag}'")))?;
                    }
                }
                Ok(Example {
                    ids,
                    class: 0,
                    targets,
                    firsts,
                })
            })
            .collect()
    };
    match (kind, data) {
        (HeadKind::Sequence, TaskData::Classify { train, dev }) => Ok((texts(train)?, texts(dev)?)),
        (HeadKind::Token, TaskData::Ner { train, dev }) => Ok((tagged(train)?, tagged(dev)?)),
        _ => Err(Error::Input(
            "internal: head kind and data do not match".into(),
        )),
    }
}

/// The mask id and the special ids of a BERT-style tokenizer, for MLM pretraining.
fn mlm_tokens(tok: &tokenizers::Tokenizer) -> Result<MlmTokens> {
    use crate::tokenizer::wordpiece::{CLS, MASK, PAD, SEP, UNK};
    let mask = tok.token_to_id(MASK).ok_or_else(|| {
        Error::Input(format!(
            "MLM pretraining needs a {MASK} token, and the tokenizer has none"
        ))
    })?;
    let special = [PAD, UNK, CLS, SEP, MASK]
        .iter()
        .filter_map(|t| tok.token_to_id(t))
        .collect();
    Ok(MlmTokens { mask, special })
}

/// The texts a tokenizer trained from scratch learns from (NER: the words of each sentence).
fn training_texts(data: &TaskData) -> Vec<String> {
    match data {
        TaskData::Classify { train, .. } => train.iter().map(|e| e.text.clone()).collect(),
        TaskData::Ner { train, .. } => train.iter().map(|s| s.words.join(" ")).collect(),
    }
}

/// A packed batch, the packed rows of its labelled tokens (token head) and their targets.
fn batch_tensors(
    ex: &[&Example],
    kind: HeadKind,
    device: &Device,
) -> Result<(Packed, Option<Tensor>, Tensor)> {
    let seqs: Vec<&[u32]> = ex.iter().map(|e| e.ids.as_slice()).collect();
    let packed = Packed::new(&seqs, device)?;
    match kind {
        HeadKind::Sequence => {
            let y: Vec<u32> = ex.iter().map(|e| e.class).collect();
            Ok((packed, None, Tensor::new(y.as_slice(), device)?))
        }
        HeadKind::Token => {
            let (mut rows, mut y) = (Vec::new(), Vec::new());
            for (b, e) in ex.iter().enumerate() {
                for (i, &target) in e.targets.iter().enumerate() {
                    if target != IGNORE {
                        rows.push(packed.row(b, i) as u32);
                        y.push(target);
                    }
                }
            }
            if rows.is_empty() {
                rows.push(0);
                y.push(0); // degenerate batch: never happens with real sentences (every word has a piece)
            }
            let rows = Tensor::new(rows.as_slice(), device)?;
            Ok((packed, Some(rows), Tensor::new(y.as_slice(), device)?))
        }
    }
}

/// Dev loss, score and report.
fn evaluate(
    model: &Classifier,
    kind: HeadKind,
    dev: &[Example],
    gold: &TaskData,
) -> Result<(f64, f64, Value)> {
    let lens: Vec<usize> = dev.iter().map(|e| e.ids.len()).collect();
    let (mut loss_sum, mut count) = (0.0, 0usize);
    let mut classes = vec![0u32; dev.len()];
    let mut tags: Vec<Vec<String>> = vec![Vec::new(); dev.len()];
    for bucket in super::length_buckets(&lens, 32) {
        let ex: Vec<&Example> = bucket.iter().map(|&i| &dev[i]).collect();
        let (packed, rows, y) = batch_tensors(&ex, kind, model.bert.device())?;
        let logits = model.logits_packed(&packed, None, None)?; // (B, L) or (N, L)
        let sel = match &rows {
            None => logits.clone(),
            Some(r) => logits.index_select(r, 0)?,
        };
        let n = y.dim(0)?;
        loss_sum += crate::nn::loss::cross_entropy(&sel, &y)?.to_scalar::<f32>()? as f64 * n as f64;
        count += n;
        match kind {
            HeadKind::Sequence => {
                for (&i, c) in bucket.iter().zip(logits.argmax(1)?.to_vec1::<u32>()?) {
                    classes[i] = c;
                }
            }
            HeadKind::Token => {
                let pred = logits.argmax(1)?.to_vec1::<u32>()?; // (N,)
                for (b, &i) in bucket.iter().enumerate() {
                    tags[i] = dev[i]
                        .firsts
                        .iter()
                        .map(|f| {
                            f.map(|p| model.labels[pred[packed.row(b, p)] as usize].clone())
                                .unwrap_or_else(|| "O".into())
                        })
                        .collect();
                }
            }
        }
    }
    let loss = loss_sum / count.max(1) as f64;
    let metric_err = |e: tessera_metrics::MetricsError| Error::Input(format!("metrics: {e}"));
    match gold {
        TaskData::Classify { dev: g, .. } => {
            let gold: Vec<&str> = g.iter().map(|e| e.label.as_str()).collect();
            let pred: Vec<&str> = classes
                .iter()
                .map(|&c| model.labels[c as usize].as_str())
                .collect();
            let r = tessera_metrics::classify::classification_report(&gold, &pred)
                .map_err(metric_err)?;
            let v = json!({"accuracy": r.accuracy, "macro_f1": r.macro_avg.f1, "per_class": r.per_class});
            Ok((loss, r.accuracy, v))
        }
        TaskData::Ner { dev: g, .. } => {
            let gold: Vec<Vec<String>> = g.iter().map(|s| s.tags.clone()).collect();
            let r = tessera_metrics::seqeval::ner_report(&gold, &tags).map_err(metric_err)?;
            let v = json!({"f1": r.micro.f1, "precision": r.micro.precision, "recall": r.micro.recall,
                "accuracy": r.accuracy, "per_type": r.per_type});
            Ok((loss, r.micro.f1, v))
        }
    }
}

/// Fine-tune the encoder in `model_dir` on `data`, writing the best model (by dev score),
/// `metrics.jsonl` and `loss.png` into `out`. Returns one report per finished epoch.
///
/// `model_dir` is a pretrained BERT directory, or a BERT config file to train from scratch
/// (then the tokenizer, trained or given by `opts.tokenizer`, is written to `out` first).
pub fn finetune(
    model_dir: &Path,
    data: &TaskData,
    opts: &FinetuneOptions,
    out: &Path,
    interrupt: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<EpochReport>> {
    if opts.epochs == 0
        || opts.batch_size == 0
        || opts.max_len < 2
        || opts.lr.is_nan()
        || opts.lr <= 0.0
    {
        return Err(Error::Input(
            "epochs, batch size and learning rate must be positive, max length at least 2".into(),
        ));
    }
    let n_train = match data {
        TaskData::Classify { train, .. } => train.len(),
        TaskData::Ner { train, .. } => train.len(),
    };
    if n_train == 0 {
        return Err(Error::Input("the training set is empty".into()));
    }
    let (kind, labels) = match data {
        TaskData::Classify { train, dev } => {
            let labels = label_set(train.iter().map(|e| e.label.as_str()));
            check_known(
                &labels,
                &dev.iter().map(|e| e.label.as_str()).collect::<Vec<_>>(),
                "dev set",
            )?;
            (HeadKind::Sequence, labels)
        }
        TaskData::Ner { train, dev } => {
            let labels = label_set(train.iter().flat_map(|s| s.tags.iter().map(String::as_str)));
            let dev_tags: Vec<&str> = dev
                .iter()
                .flat_map(|s| s.tags.iter().map(String::as_str))
                .collect();
            check_known(&labels, &dev_tags, "dev set")?;
            (HeadKind::Token, labels)
        }
    };
    if labels.len() < 2 {
        return Err(Error::Input(format!(
            "need at least 2 labels in the training data, found {:?}",
            labels
        )));
    }
    let mlm_extra = match &opts.mlm_data {
        Some(_) if opts.mlm_epochs == 0 => {
            return Err(Error::Input(
                "MLM data was given but no MLM pretraining (set the MLM epochs above 0)".into(),
            ))
        }
        Some(p) => super::data::read_texts(p)?,
        None => Vec::new(),
    };
    let device = Device::Cpu;
    let mut rng = Rng::new(opts.seed);
    // Data-parallel: every rank trains; rank 0 alone writes (the others keep their trained
    // tokenizer in a directory of their own).
    let root = crate::dist::is_root();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let private = if root {
        None
    } else {
        Some(tempfile::tempdir().map_err(|e| Error::io(out, e))?)
    };
    let writes = private.as_ref().map_or(out, |d| d.path());
    let (cfg, params, tokenizer_path) = if is_scratch_config(model_dir) {
        let texts = training_texts(data);
        let refs: Vec<&str> = texts.iter().chain(&mlm_extra).map(String::as_str).collect();
        let tok = ScratchTokenizer {
            file: opts.tokenizer.as_deref(),
            vocab_size: opts.vocab_size,
            cased: opts.cased,
            cjk_words: opts.cjk_words,
        };
        let (cfg, tokenizer) = scratch_encoder(model_dir, &refs, &tok)?;
        // Every rank uses rank 0's tokenizer (training it again may order tied pieces
        // differently).
        let tokenizer = crate::dist::share_tokenizer(crate::dist::world(), tokenizer)?;
        let path = writes.join("tokenizer.json");
        tokenizer.save(&path)?;
        // Tell transformers to use tokenizer.json as it is: without this file its Auto classes
        // build a BertTokenizer whose defaults (one token per CJK character) override the trained
        // normalizer (`--cjk-words`), and the ids differ.
        let tok_cfg = json!({"tokenizer_class": "PreTrainedTokenizerFast",
            "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "unk_token": "[UNK]", "mask_token": "[MASK]",
            "model_max_length": opts.max_len.min(cfg.max_position_embeddings)});
        crate::util::fs::write_atomic(
            &writes.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&tok_cfg)?.as_bytes(),
        )?;
        let params = Classifier::init_scratch(&cfg, kind, labels.len(), &mut rng, &device)?;
        on_event(Event::Scratch {
            vocab_size: cfg.vocab_size,
            tokenizer_trained: opts.tokenizer.is_none(),
            parameters: params.vars.iter().map(|v| v.elem_count()).sum(),
        });
        (cfg, params, path)
    } else {
        if opts.tokenizer.is_some() || opts.vocab_size.is_some() {
            return Err(Error::Input(
                "a tokenizer or vocabulary size can only be given when training from scratch (--model CONFIG.json); a pretrained model keeps its own".into(),
            ));
        }
        let (cfg, params) =
            Classifier::init_params(model_dir, kind, labels.len(), &mut rng, &device)?;
        (cfg, params, model_dir.join("tokenizer.json"))
    };
    // Inputs never exceed the position table: longer ones are truncated to it.
    let max_len = opts.max_len.min(cfg.max_position_embeddings);
    let model = Classifier::from_params(
        kind,
        &cfg,
        &params,
        labels.clone(),
        max_len,
        &tokenizer_path,
    )?
    .with_truncation(opts.truncation)?;
    let (train, dev) = prepare(kind, &model, data, &labels)?;
    if train.is_empty() || dev.is_empty() {
        return Err(Error::Input(
            "training and dev sets must not be empty".into(),
        ));
    }
    let per_epoch = train.len().div_ceil(opts.batch_size);
    let total = opts
        .max_steps
        .unwrap_or(usize::MAX)
        .min(per_epoch * opts.epochs);
    let warmup = (total as f64 * opts.warmup_ratio).round() as usize;
    let mut opt = AdamW::new(&params, 0.9, 0.999, 1e-8, opts.weight_decay)?;
    let metrics_path = writes.join("metrics.jsonl");
    crate::util::fs::write_atomic(&metrics_path, b"")?;
    on_event(Event::Start {
        total_steps: total,
        train: train.len(),
        dev: dev.len(),
        labels: &labels,
    });
    let (hidden_p, attn_p) = match opts.dropout {
        Some(p) => (p, p),
        None => (cfg.dropout, cfg.attention_dropout),
    };
    if opts.mlm_epochs > 0 {
        let mut seqs: Vec<Vec<u32>> = train.iter().map(|e| e.ids.clone()).collect();
        for t in &mlm_extra {
            seqs.push(model.encode(t)?);
        }
        let mlm = MlmOptions {
            epochs: opts.mlm_epochs,
            batch_size: opts.batch_size,
            lr: opts.mlm_lr,
            warmup_ratio: opts.warmup_ratio,
            weight_decay: opts.weight_decay,
            grad_clip: opts.grad_clip,
            mask_prob: 0.15,
            hidden_dropout: hidden_p,
            attention_dropout: attn_p,
            group_by_length: opts.group_by_length,
        };
        let tokens = mlm_tokens(&model.tokenizer)?;
        let mut events = MlmEvents {
            total: seqs.len().div_ceil(opts.batch_size) * opts.mlm_epochs,
            on_event: &mut *on_event,
        };
        let losses = pretrain_mlm(
            &cfg,
            &params,
            &seqs,
            &tokens,
            &mlm,
            &mut rng,
            interrupt,
            &mut events,
        )?;
        let mut lines = String::new();
        for (i, l) in losses.iter().enumerate() {
            lines.push_str(&json!({"mlm_epoch": i + 1, "mlm_loss": l}).to_string());
            lines.push('\n');
        }
        crate::util::fs::write_atomic(&metrics_path, lines.as_bytes())?;
    }
    let mut objective = TaskObjective {
        model: &model,
        params: &params,
        kind,
        train: &train,
        dev: &dev,
        data,
        batch_size: opts.batch_size,
        group_by_length: opts.group_by_length,
        dropout: (hidden_p, attn_p),
        cursor: EpochCursor::default(),
        epoch_start: Instant::now(),
        loss_sum: 0.0,
        batches: 0,
        seen: 0,
        out,
        reports: Vec::new(),
        on_event,
        total,
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
        eval: EvalAt::Epochs,
        patience: opts.patience,
        max_time: None,
        stop: interrupt,
        metrics: Some(metrics_path),
        comm: crate::dist::world(),
    };
    crate::train::run::run(
        &mut objective,
        &mut opt,
        &mut rng,
        &mut RunState::default(),
        &plan,
        &mut (),
    )?;
    let reports = std::mem::take(&mut objective.reports);
    crate::util::fs::write_atomic(
        &writes.join("finetune_options.json"),
        serde_json::to_string_pretty(opts)?.as_bytes(),
    )?;
    Ok(reports)
}

/// Classification or NER fine-tuning as an [`Objective`] of the one loop: epochs of shuffled
/// (or length-grouped) packed batches, cross-entropy on the labels, dropout from the run's
/// generator; evaluation on the dev set after each epoch, whose best model is saved.
struct TaskObjective<'a> {
    model: &'a Classifier,
    params: &'a crate::models::ParamStore,
    kind: HeadKind,
    train: &'a [Example],
    dev: &'a [Example],
    data: &'a TaskData,
    batch_size: usize,
    group_by_length: bool,
    /// (hidden, attention) dropout.
    dropout: (f32, f32),
    /// This epoch's batches of example indices, and the next one to take.
    cursor: EpochCursor,
    epoch_start: Instant,
    loss_sum: f64,
    batches: usize,
    seen: usize,
    out: &'a Path,
    reports: Vec<EpochReport>,
    on_event: &'a mut dyn FnMut(Event<'_>),
    total: usize,
}

impl Objective for TaskObjective<'_> {
    fn params(&self) -> &crate::models::ParamStore {
        self.params
    }

    fn items_name(&self) -> &'static str {
        "examples"
    }

    fn start_epoch(&mut self, epoch: usize, rng: &mut Rng) -> Result<()> {
        let lens: Vec<usize> = self.train.iter().map(|e| e.ids.len()).collect();
        let batches = epoch_batches(&lens, self.batch_size, self.group_by_length, rng);
        self.cursor.start(epoch, batches);
        self.epoch_start = Instant::now();
        (self.loss_sum, self.batches, self.seen) = (0.0, 0, 0);
        Ok(())
    }

    fn next_micro(&mut self, rng: &mut Rng, shard: Shard) -> Result<Option<Micro>> {
        let Some(chunk) = self.cursor.next_batch() else {
            return Ok(None);
        };
        let ex: Vec<&Example> = shard.take(chunk).iter().map(|&i| &self.train[i]).collect();
        let mut drop_rng = shard.dropout_rng(rng);
        if ex.is_empty() {
            return Micro::empty().map(Some);
        }
        let (packed, rows, y) = batch_tensors(&ex, self.kind, self.model.bert.device())?;
        let mut drop = BlockDropout {
            hidden: self.dropout.0,
            attention: self.dropout.1,
            rng: &mut drop_rng,
        };
        let logits = self
            .model
            .logits_packed(&packed, rows.as_ref(), Some(&mut drop))?;
        let loss = crate::nn::loss::cross_entropy(&logits, &y)?;
        Ok(Some(Micro {
            loss,
            items: ex.len(),
            terms: y.elem_count(),
        }))
    }

    fn on_step(
        &mut self,
        s: &crate::train::StepStats,
        _opt: &AdamW,
        _rng: &Rng,
        _elapsed: f64,
    ) -> Result<()> {
        // The epoch's training loss: the mean of its steps' (every rank's shards together).
        self.loss_sum += s.loss;
        self.batches += 1;
        self.seen += s.items;
        (self.on_event)(Event::Step {
            step: s.step,
            total: self.total,
            loss: s.loss,
            lr: s.lr,
        });
        Ok(())
    }

    fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        if self.batches == 0 {
            return Ok(None);
        }
        let (dev_loss, score, dev) = evaluate(self.model, self.kind, self.dev, self.data)?;
        let r = EpochReport {
            epoch: self.cursor.epoch(),
            step: 0,
            train_loss: self.loss_sum / self.batches as f64,
            dev_loss,
            score,
            dev,
            best: false,
            train_examples_per_s: self.seen as f64
                / self.epoch_start.elapsed().as_secs_f64().max(1e-9),
        };
        self.reports.push(r);
        Ok(Some(Evaluation {
            loss: dev_loss,
            score: Some(score),
            log: Value::Null, // written in on_eval, once step and best are known
        }))
    }

    fn on_eval(&mut self, step: usize, e: &mut Evaluation, best: bool) -> Result<()> {
        if best {
            self.model.save(self.out, self.params)?;
        }
        if let Some(r) = self.reports.last_mut() {
            r.step = step;
            r.best = best;
            e.log = json!({ "eval": r });
            (self.on_event)(Event::Epoch(r));
        }
        Ok(())
    }
}

/// MLM pretraining's progress as fine-tuning [`Event`]s.
struct MlmEvents<'a> {
    total: usize,
    on_event: &'a mut dyn FnMut(Event<'_>),
}

impl crate::train::run::Observer for MlmEvents<'_> {
    fn on_step(&mut self, s: &crate::train::StepStats) {
        (self.on_event)(Event::Pretrain {
            step: s.step,
            total: self.total,
            loss: s.loss,
            lr: s.lr,
        });
    }

    fn on_epoch(&mut self, epoch: usize, loss: f64, items_per_s: f64) {
        (self.on_event)(Event::PretrainEpoch {
            epoch,
            loss,
            examples_per_s: items_per_s,
        });
    }
}
