//! Training an encoder-decoder on sentence pairs (`tessera train --task translation`), as an
//! [`Objective`] of the one loop: a joint byte-level BPE trained on both sides of the training
//! pairs, a dev split by whole books (never by verse), batches by token count (sorted by length,
//! shuffled), teacher forcing with label smoothing and dropout, and an evaluation every
//! `eval_every` steps: dev loss, then BLEU and chrF (sacreBLEU's, from tessera-metrics) of greedy
//! translations of the first `eval_sentences` dev pairs. The best model by BLEU is kept in
//! `best/` (Marian layout: transformers loads it), the latest state in `checkpoint/` (resumable).

use super::data::{group_of, read_pairs, split_dev_by_group, token_batches, Pair};
use crate::generate::beam::{generate_seq2seq_with, Seq2SeqGenerate};
use crate::models::seq2seq::{Seq2Seq, Seq2SeqBatch, Seq2SeqConfig, LOGITS_BIAS};
use crate::models::{BlockDropout, ParamStore};
use crate::tokenizer::Tokenizer;
use crate::train::checkpoint::{read_moments, read_state, write_dir};
use crate::train::data::EpochCursor;
use crate::train::optim::AdamW;
use crate::train::run::{EvalAt, Evaluation, Micro, Objective, Plan, RunState, Shard, StepStats};
use crate::train::{Ended, Schedule};
use crate::util::fs::write_atomic;
use crate::util::rng::Rng;
use crate::weights::safetensors::{load_safetensors, safetensors_bytes};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The `"training"` object of a seq2seq config file (every field has a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslationConfig {
    /// Entries of the joint BPE trained on both sides.
    pub vocab_size: usize,
    /// Padded tokens per batch (rows × longest source, and rows × longest target).
    pub max_tokens: usize,
    /// Peak learning rate (linear warmup, cosine decay to a tenth).
    pub lr: f64,
    pub warmup_steps: usize,
    /// Optimizer steps of the schedule.
    pub max_steps: usize,
    /// Epochs at most.
    pub epochs: usize,
    /// Label smoothing ε of the loss.
    pub label_smoothing: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: usize,
    /// Dev pairs translated (greedy) for BLEU/chrF at each evaluation (0 = all).
    pub eval_sentences: usize,
    /// Fraction of the pairs held out as dev, by whole groups (books).
    pub dev_fraction: f64,
    /// Training pairs longer than this many tokens on either side are left out (counted).
    pub max_len: usize,
    /// Write the resumable checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    pub seed: u64,
}

impl Default for TranslationConfig {
    fn default() -> Self {
        TranslationConfig {
            vocab_size: 8000,
            max_tokens: 4096,
            lr: 7e-4,
            warmup_steps: 400,
            max_steps: 20000,
            epochs: 1000,
            label_smoothing: 0.1,
            weight_decay: 0.0,
            grad_clip: 1.0,
            eval_every: 500,
            eval_sentences: 300,
            dev_fraction: 0.05,
            max_len: 128,
            checkpoint_every: 500,
            seed: 1234,
        }
    }
}

impl TranslationConfig {
    /// Check the numbers.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.max_tokens == 0 || self.max_steps == 0 || self.epochs == 0 || self.max_len == 0 {
            return bad("max_tokens, max_steps, epochs and max_len must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        Ok(())
    }
}

/// A seq2seq config file: the model (Marian `config.json` fields) and its `"training"` object.
pub fn parse_config(v: &Value) -> Result<(Seq2SeqConfig, TranslationConfig)> {
    let mut model = v.clone();
    let training = model
        .as_object_mut()
        .and_then(|o| o.remove("training"))
        .unwrap_or(json!({}));
    let t: TranslationConfig = serde_path_to_error::deserialize(&training)
        .map_err(|e| Error::Config(format!("training: {e}")))?;
    t.validate()?;
    Ok((Seq2SeqConfig::from_hf_json(&model)?, t))
}

/// What happened, for progress display.
pub enum Event<'a> {
    /// Data read and tokenized, model built.
    Start {
        train: usize,
        dev: usize,
        /// Training pairs left out for being longer than `max_len`.
        skipped: usize,
        dev_groups: &'a [String],
        parameters: usize,
        vocab_size: usize,
        resumed_at: usize,
    },
    Step(&'a StepStats),
    Eval {
        step: usize,
        e: &'a Evaluation,
        best: bool,
    },
    Checkpoint(&'a Path),
}

/// Where a run writes and when it stops.
pub struct TranslationRun<'a> {
    pub data: PathBuf,
    pub src: String,
    pub tgt: String,
    pub out: PathBuf,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Use this tokenizer instead of training one.
    pub tokenizer: Option<PathBuf>,
    pub max_time: Option<Duration>,
    pub stop: Option<&'a AtomicBool>,
}

/// Everything besides tensors needed to resume exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    step: usize,
    /// Epochs completed, and batches of the current epoch done.
    epoch: usize,
    batches_done: usize,
    adam_step: u64,
    rng: Rng,
    best: Option<f64>,
    since_best: usize,
    training: TranslationConfig,
    src: String,
    tgt: String,
}

const STATE_VERSION: u32 = 1;

/// Tokenized pairs.
struct Data {
    train: Vec<(Vec<u32>, Vec<u32>)>,
    dev: Vec<(Vec<u32>, Vec<u32>)>,
    dev_pairs: Vec<Pair>,
}

/// The source side as the model reads it: the sentence's ids and the end token.
pub fn source_ids(tok: &Tokenizer, text: &str, eos: u32) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text)?;
    ids.push(eos);
    Ok(ids)
}

struct TranslateObjective<'a> {
    model: Seq2Seq,
    params: &'a ParamStore,
    cfg: &'a Seq2SeqConfig,
    t: &'a TranslationConfig,
    data: &'a Data,
    tok: &'a Tokenizer,
    /// This epoch's batches (a resumed run starts its first epoch past those it had done).
    cursor: EpochCursor,
    out: &'a Path,
    src: &'a str,
    tgt: &'a str,
    obs: &'a mut dyn FnMut(Event<'_>),
    /// The best BLEU so far and evaluations since (saved for a resume).
    best: Option<f64>,
    since_best: usize,
}

impl Objective for TranslateObjective<'_> {
    fn params(&self) -> &ParamStore {
        self.params
    }

    fn items_name(&self) -> &'static str {
        "tokens"
    }

    fn start_epoch(&mut self, epoch: usize, _rng: &mut Rng) -> Result<()> {
        // The order of an epoch depends on the seed and the epoch alone (a resumed run finds it).
        let lens: Vec<(usize, usize)> = self
            .data
            .train
            .iter()
            .map(|(s, t)| (s.len(), t.len() + 1))
            .collect();
        let mut rng = Rng::derived(self.t.seed, epoch as u64);
        let batches = token_batches(&lens, self.t.max_tokens, &mut rng);
        self.cursor.start(epoch, batches);
        Ok(())
    }

    fn next_micro(&mut self, rng: &mut Rng, shard: Shard) -> Result<Option<Micro>> {
        let Some(batch) = self.cursor.next_batch() else {
            return Ok(None);
        };
        let pairs: Vec<(&[u32], &[u32])> = shard
            .take(batch)
            .iter()
            .map(|&i| {
                let (s, t) = &self.data.train[i];
                (s.as_slice(), t.as_slice())
            })
            .collect();
        let mut drop_rng = shard.dropout_rng(rng);
        if pairs.is_empty() {
            return Micro::empty().map(Some);
        }
        let b = Seq2SeqBatch::new(
            &pairs,
            self.cfg.pad()?,
            self.cfg.decoder_start_token_id,
            self.cfg.eos()?,
            self.model.decoder.device(),
        )?;
        let d = &self.cfg.decoder;
        let mut drop = BlockDropout {
            hidden: d.dropout,
            attention: d.attention_dropout,
            rng: &mut drop_rng,
        };
        let use_drop = d.dropout > 0.0 || d.attention_dropout > 0.0;
        let loss = self
            .model
            .loss(&b, self.t.label_smoothing, use_drop.then_some(&mut drop))?;
        Ok(Some(Micro {
            loss,
            items: b.tokens,
            terms: b.tokens,
        }))
    }

    fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        let e = evaluate(
            &self.model,
            self.cfg,
            self.t,
            self.data,
            self.tok,
            self.t.eval_sentences,
        )?;
        Ok(Some(e))
    }

    fn on_eval(&mut self, step: usize, e: &mut Evaluation, best: bool) -> Result<()> {
        if best {
            save_model(&self.out.join("best"), self.cfg, self.params, self.tok)?;
            self.best = e.score;
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        e.log["best"] = json!(best);
        (self.obs)(Event::Eval { step, e, best });
        Ok(())
    }

    fn on_step(&mut self, s: &StepStats, opt: &AdamW, rng: &Rng, _elapsed: f64) -> Result<()> {
        (self.obs)(Event::Step(s));
        let every = self.t.checkpoint_every;
        if (every > 0 && s.step.is_multiple_of(every)) || s.step == self.t.max_steps {
            self.checkpoint(s.step, opt, rng)?;
        }
        Ok(())
    }
}

impl TranslateObjective<'_> {
    fn checkpoint(&mut self, step: usize, opt: &AdamW, rng: &Rng) -> Result<()> {
        let (epoch, batches_done) = self.cursor.resume_point();
        let state = State {
            version: STATE_VERSION,
            step,
            epoch,
            batches_done,
            adam_step: opt.step,
            rng: rng.clone(),
            best: self.best,
            since_best: self.since_best,
            training: self.t.clone(),
            src: self.src.to_string(),
            tgt: self.tgt.to_string(),
        };
        let dir = self.out.join("checkpoint");
        write_dir(
            &dir,
            &self.cfg.to_hf_json(),
            &model_bytes(self.cfg, self.params)?,
            self.tok,
            self.params,
            (&opt.m, &opt.v),
            &state,
        )?;
        (self.obs)(Event::Checkpoint(&dir));
        Ok(())
    }
}

/// `model.safetensors` of an encoder-decoder: its parameters under Marian names and a zero
/// `final_logits_bias`.
fn model_bytes(cfg: &Seq2SeqConfig, params: &ParamStore) -> Result<Vec<u8>> {
    let mut named = crate::models::Transformer::named_tensors(params);
    let v = cfg.decoder.vocab_size;
    let dev = params
        .vars
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    named.push((LOGITS_BIAS.into(), Tensor::zeros((1, v), DType::F32, &dev)?));
    safetensors_bytes(&named)
}

/// A model directory transformers loads as `MarianMTModel` with a fast tokenizer.
pub fn save_model(
    dir: &Path,
    cfg: &Seq2SeqConfig,
    params: &ParamStore,
    tok: &Tokenizer,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = |v: &Value| serde_json::to_string_pretty(v).expect("JSON");
    write_atomic(&dir.join("config.json"), json(&cfg.to_hf_json()).as_bytes())?;
    write_atomic(&dir.join("model.safetensors"), &model_bytes(cfg, params)?)?;
    write_atomic(&dir.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    let name = |id: Option<u32>| id.and_then(|i| tok.inner().id_to_token(i));
    let tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": name(cfg.decoder.eos_token_id),
        "pad_token": name(cfg.decoder.pad_token_id),
        "model_max_length": cfg.encoder.max_position_embeddings,
    });
    write_atomic(&dir.join("tokenizer_config.json"), json(&tc).as_bytes())?;
    let gc = json!({
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "eos_token_id": cfg.decoder.eos_token_id,
        "pad_token_id": cfg.decoder.pad_token_id,
        "forced_eos_token_id": cfg.forced_eos_token_id,
        "max_length": cfg.decoder.max_position_embeddings,
    });
    write_atomic(&dir.join("generation_config.json"), json(&gc).as_bytes())
}

/// Dev loss over every dev pair, then BLEU and chrF of greedy translations of the first
/// `sentences` (0 = all).
fn evaluate(
    model: &Seq2Seq,
    cfg: &Seq2SeqConfig,
    t: &TranslationConfig,
    data: &Data,
    tok: &Tokenizer,
    sentences: usize,
) -> Result<Evaluation> {
    let (pad, eos) = (cfg.pad()?, cfg.eos()?);
    let dev = model.decoder.device();
    let lens: Vec<(usize, usize)> = data
        .dev
        .iter()
        .map(|(s, t)| (s.len(), t.len() + 1))
        .collect();
    let (mut loss_sum, mut tokens) = (0.0, 0usize);
    for batch in token_batches(&lens, t.max_tokens, &mut Rng::new(0)) {
        let pairs: Vec<(&[u32], &[u32])> = batch
            .iter()
            .map(|&i| (data.dev[i].0.as_slice(), data.dev[i].1.as_slice()))
            .collect();
        let b = Seq2SeqBatch::new(&pairs, pad, cfg.decoder_start_token_id, eos, dev)?;
        let l = model.loss(&b, 0.0, None)?.to_scalar::<f32>()? as f64;
        loss_sum += l * b.tokens as f64;
        tokens += b.tokens;
    }
    let loss = loss_sum / tokens.max(1) as f64;
    let n = if sentences == 0 {
        data.dev.len()
    } else {
        sentences.min(data.dev.len())
    };
    let srcs: Vec<&[u32]> = data.dev[..n].iter().map(|p| p.0.as_slice()).collect();
    let hyps = translate_ids(model, &srcs, &Seq2SeqGenerate::default(), 32)?;
    let texts: Vec<String> = hyps
        .iter()
        .map(|h| tok.decode_text(h[0].content(eos)))
        .collect::<Result<_>>()?;
    let refs: Vec<Vec<&str>> = data.dev_pairs[..n]
        .iter()
        .map(|p| vec![p.tgt.as_str()])
        .collect();
    let hyp_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let metric = |e: tessera_metrics::error::MetricsError| Error::Input(e.to_string());
    let bleu = tessera_metrics::bleu::Bleu::default()
        .corpus_score(&hyp_refs, &refs)
        .map_err(metric)?;
    let chrf = tessera_metrics::chrf::Chrf::default()
        .corpus_score(&hyp_refs, &refs)
        .map_err(metric)?;
    Ok(Evaluation {
        loss,
        score: Some(bleu.score),
        log: json!({"dev_loss": loss, "dev_ppl": loss.exp(), "bleu": bleu.score,
                    "chrf": chrf.score, "bleu_sentences": n,
                    "example": {"src": data.dev_pairs.first().map(|p| &p.src),
                                "hyp": texts.first(), "ref": data.dev_pairs.first().map(|p| &p.tgt)}}),
    })
}

/// Decode source id sequences in batches of `batch` (sorted by length to keep padding low);
/// results in input order.
pub fn translate_ids(
    model: &Seq2Seq,
    srcs: &[&[u32]],
    opts: &Seq2SeqGenerate,
    batch: usize,
) -> Result<Vec<Vec<crate::generate::beam::Hypothesis>>> {
    let mut order: Vec<usize> = (0..srcs.len()).collect();
    order.sort_by_key(|&i| srcs[i].len());
    let mut out = vec![Vec::new(); srcs.len()];
    if srcs.is_empty() {
        return Ok(out);
    }
    let backend = model.inference_decoder()?;
    let limit = Seq2SeqGenerate {
        max_new_tokens: opts
            .max_new_tokens
            .min(model.cfg.decoder.max_position_embeddings - 1),
        ..opts.clone()
    };
    for chunk in order.chunks(batch.max(1)) {
        let part: Vec<&[u32]> = chunk.iter().map(|&i| srcs[i]).collect();
        for (&i, h) in chunk
            .iter()
            .zip(generate_seq2seq_with(model, &backend, &part, &limit)?)
        {
            out[i] = h;
        }
    }
    Ok(out)
}

/// Read, split and tokenize the pairs.
fn prepare(
    pairs: Vec<Pair>,
    tok: &Tokenizer,
    cfg: &Seq2SeqConfig,
    t: &TranslationConfig,
) -> Result<(Data, usize, Vec<String>)> {
    let eos = cfg.eos()?;
    let groups: Vec<&str> = pairs.iter().map(|p| group_of(&p.reference)).collect();
    let (train_idx, dev_idx) = split_dev_by_group(&groups, t.dev_fraction, t.seed)?;
    let mut dev_groups: Vec<String> = dev_idx.iter().map(|&i| groups[i].to_string()).collect();
    dev_groups.dedup();
    let max_src = t.max_len.min(cfg.encoder.max_position_embeddings);
    let max_tgt = t.max_len.min(cfg.decoder.max_position_embeddings - 1);
    let mut train = Vec::with_capacity(train_idx.len());
    let mut skipped = 0;
    for &i in &train_idx {
        let s = source_ids(tok, &pairs[i].src, eos)?;
        let y = tok.encode(&pairs[i].tgt)?;
        if s.len() > max_src || y.len() > max_tgt {
            skipped += 1;
            continue;
        }
        train.push((s, y));
    }
    let mut dev = Vec::with_capacity(dev_idx.len());
    let mut dev_pairs = Vec::with_capacity(dev_idx.len());
    for &i in &dev_idx {
        let mut s = source_ids(tok, &pairs[i].src, eos)?;
        let mut y = tok.encode(&pairs[i].tgt)?;
        // Dev pairs are kept whole for BLEU; the loss reads them cut to what the model holds.
        s.truncate(max_src);
        y.truncate(max_tgt);
        dev.push((s, y));
        dev_pairs.push(pairs[i].clone());
    }
    if train.is_empty() {
        return Err(Error::Input("no training pairs fit max_len".into()));
    }
    Ok((
        Data {
            train,
            dev,
            dev_pairs,
        },
        skipped,
        dev_groups,
    ))
}

/// Train (or resume) a translation model; returns how the run ended.
pub fn train_translation(
    run: &TranslationRun<'_>,
    config: Option<(Seq2SeqConfig, TranslationConfig)>,
    device: &Device,
    obs: &mut dyn FnMut(Event<'_>),
) -> Result<Ended> {
    let ckpt = run.out.join("checkpoint");
    let pairs = read_pairs(&run.data, &run.src, &run.tgt)?;
    let (cfg, t, tok, params, opt_state, state) = if run.resume {
        if !ckpt.is_dir() {
            return Err(Error::Input(format!(
                "--resume: {} has no checkpoint to resume from",
                run.out.display()
            )));
        }
        let cfg = Seq2SeqConfig::from_file(ckpt.join("config.json"))?;
        let st_path = ckpt.join("model.safetensors");
        let tensors = load_safetensors(&st_path, device)?;
        let params =
            ParamStore::from_tensors_specs(cfg.param_specs(), &tensors, DType::F32, &st_path)?;
        let tok = Tokenizer::from_file(ckpt.join("tokenizer.json"))?;
        let moments = read_moments(&ckpt, &params, device)?;
        let state: State = read_state(&ckpt)?;
        if state.version != STATE_VERSION {
            return Err(Error::checkpoint(
                &ckpt,
                "unsupported trainer state version",
            ));
        }
        if state.src != run.src || state.tgt != run.tgt {
            return Err(Error::Input(format!(
                "the checkpoint translates {} -> {}, not {} -> {}",
                state.src, state.tgt, run.src, run.tgt
            )));
        }
        (
            cfg,
            state.training.clone(),
            tok,
            params,
            Some(moments),
            Some(state),
        )
    } else {
        let (mut cfg, t) = config.ok_or_else(|| Error::Config("no config".into()))?;
        let tok = match &run.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => {
                let texts: Vec<&str> = pairs
                    .iter()
                    .flat_map(|p| [p.src.as_str(), p.tgt.as_str()])
                    .collect();
                let joined = texts.join("\n");
                // Every rank of a data-parallel run uses rank 0's.
                crate::dist::share_tokenizer(
                    crate::dist::world(),
                    Tokenizer::train_bpe(&[&joined], t.vocab_size)?,
                )?
            }
        };
        let eos = tok
            .eos_id()
            .ok_or_else(|| Error::Config("the tokenizer has no end-of-sequence token".into()))?;
        let pad = tok
            .token_id("<|pad|>")
            .or_else(|| tok.token_id("<pad>"))
            .ok_or_else(|| Error::Config("the tokenizer has no padding token".into()))?;
        for s in [&mut cfg.encoder, &mut cfg.decoder] {
            s.vocab_size = tok.vocab_size();
            s.eos_token_id = Some(eos);
            s.pad_token_id = Some(pad);
        }
        cfg.decoder_start_token_id = pad;
        cfg.forced_eos_token_id = Some(eos);
        cfg.validate()?;
        let mut rng = Rng::new(t.seed);
        let params = ParamStore::init_specs(cfg.param_specs(), &mut rng, DType::F32, device)?;
        (cfg, t, tok, params, None, None)
    };
    let (data, skipped, dev_groups) = prepare(pairs, &tok, &cfg, &t)?;
    let mut opt = AdamW::new(&params, 0.9, 0.98, 1e-9, t.weight_decay)?;
    let mut rng = Rng::new(t.seed).fork();
    let mut run_state = RunState::at_step(0);
    let mut skip = 0;
    if let (Some((m, v)), Some(s)) = (opt_state, &state) {
        opt.m = m;
        opt.v = v;
        opt.step = s.adam_step;
        rng = s.rng.clone();
        run_state = RunState::resumed(s.step, s.epoch, s.best, s.since_best);
        skip = s.batches_done;
    }
    obs(Event::Start {
        train: data.train.len(),
        dev: data.dev.len(),
        skipped,
        dev_groups: &dev_groups,
        parameters: cfg.num_params(),
        vocab_size: tok.vocab_size(),
        resumed_at: run_state.step,
    });
    // Data-parallel: rank 0 alone writes (split, metrics, checkpoints, models).
    let comm = crate::dist::world();
    let root = comm.rank() == 0;
    let metrics = run.out.join("metrics.jsonl");
    if root {
        std::fs::create_dir_all(&run.out).map_err(|e| Error::io(&run.out, e))?;
        // The split, for other tools that must evaluate on the same dev pairs (the PyTorch
        // comparison script reads it).
        let split = json!({"src": run.src, "tgt": run.tgt, "dev_groups": dev_groups,
                           "dev_pairs": data.dev.len(), "train_pairs": data.train.len(),
                           "eval_sentences": t.eval_sentences, "seed": t.seed});
        write_atomic(
            &run.out.join("split.json"),
            serde_json::to_string_pretty(&split)?.as_bytes(),
        )?;
        crate::train::trainer::trim_metrics(&metrics, run_state.step)?;
    }
    let plan = Plan {
        schedule: Schedule::Cosine {
            lr: t.lr,
            min_lr: t.lr / 10.0,
            warmup: t.warmup_steps,
            total: t.max_steps,
        },
        max_steps: t.max_steps,
        epochs: t.epochs,
        grad_accum: 1,
        grad_clip: t.grad_clip,
        eval: EvalAt::Steps(t.eval_every),
        patience: 0,
        max_time: run.max_time,
        stop: run.stop,
        metrics: Some(metrics),
        comm,
    };
    let model = Seq2Seq::from_params(&cfg, &params)?;
    let mut o = TranslateObjective {
        model,
        params: &params,
        cfg: &cfg,
        t: &t,
        data: &data,
        tok: &tok,
        cursor: EpochCursor::resuming(skip),
        out: &run.out,
        src: &run.src,
        tgt: &run.tgt,
        obs,
        best: state.as_ref().and_then(|s| s.best),
        since_best: state.as_ref().map_or(0, |s| s.since_best),
    };
    let ended = crate::train::run::run(&mut o, &mut opt, &mut rng, &mut run_state, &plan, &mut ())?;
    if root {
        // Keep where the run stopped.
        o.checkpoint(run_state.step, &opt, &rng)?;
        if !run.out.join("best").is_dir() {
            save_model(&run.out.join("best"), &cfg, &params, &tok)?;
        }
    }
    Ok(ended)
}
