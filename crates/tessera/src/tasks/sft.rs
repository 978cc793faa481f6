//! Supervised fine-tuning of a pretrained chat model (`tessera finetune chat`), as an
//! [`Objective`] of the one loop: conversations rendered through the model's own chat template,
//! the loss on the assistant turns alone, batches of similar length, and either LoRA adapters on
//! a frozen base (kept quantized when it is a GGUF file) or every weight (`--full`).
//!
//! Data: JSONL, one example per line: `{"messages": [{"role": "system"|"user"|"assistant",
//! "content": ...}, ...]}` or `{"prompt": ..., "completion": ...}` (a user turn and the assistant's
//! answer). A bad line (not JSON, an unknown role, no assistant turn, longer than `max_len`) is an
//! error naming it, or skipped and counted with `skip_invalid`.
//!
//! Assistant tokens: for the assistant message i, the ids of the conversation up to it with the
//! generation prompt (`<|im_start|>assistant\n`) are a prefix of the ids up to and including it;
//! the tokens between are the answer, trained up to and including the end-of-turn token (the
//! model learns to stop), not the template's text after it.
//!
//! Evaluation: the dev loss, and the exact-match rate of greedy answers computed by teacher
//! forcing (an answer counts when the arg-max at every one of its positions is its token: what
//! greedy decoding would produce from the same prompt, end-of-turn included).

use crate::models::gguf_loader::load_gguf_frozen;
use crate::models::lora::{self, Adapter, BaseId, LoraConfig};
use crate::models::transformer::{TargetRows, IGNORE};
use crate::models::{ParamStore, Transformer, TransformerConfig};
use crate::tokenizer::chat::Message;
use crate::tokenizer::chat::ModelTokenizer;
use crate::train::checkpoint::{read_moments, read_state, write_dir};
use crate::train::data::{epoch_batches, EpochCursor};
use crate::train::optim::AdamW;
use crate::train::run::{EvalAt, Evaluation, Micro, Objective, Plan, RunState, Shard, StepStats};
use crate::train::{Ended, Schedule};
use crate::util::fs::write_atomic;
use crate::util::rng::Rng;
use crate::weights::Gguf;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// One training example: input ids and, per position, the next token to predict or [`IGNORE`].
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    pub targets: Vec<u32>,
    /// 1-based line of the data file.
    pub line: usize,
}

impl SftExample {
    /// Positions that carry a target.
    pub fn answer_tokens(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// A line left out of the data, and why.
#[derive(Clone, Debug)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// Read a JSONL chat file: (line, messages) per example. Blank lines are skipped.
pub fn read_chat_jsonl(path: &Path) -> Result<Vec<(usize, Result<Vec<Message>>)>> {
    let text = crate::error::read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push((i + 1, parse_line(line)));
    }
    Ok(out)
}

/// One JSONL line as messages, checked: known roles, string contents, an assistant turn.
pub fn parse_line(line: &str) -> Result<Vec<Message>> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| Error::Input(format!("not valid JSON: {e}")))?;
    let str_field = |v: &Value, k: &str| -> std::result::Result<String, String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("'{k}' must be a string"))
    };
    let msgs = if let Some(list) = v.get("messages") {
        let list = list
            .as_array()
            .ok_or_else(|| Error::Input("'messages' must be a list".into()))?;
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let at = |e: String| Error::Input(format!("messages[{i}]: {e}"));
                let role = str_field(m, "role").map_err(at)?;
                let content = str_field(m, "content").map_err(at)?;
                if !["system", "user", "assistant"].contains(&role.as_str()) {
                    return Err(Error::Input(format!(
                        "messages[{i}]: unknown role '{role}' (system, user or assistant)"
                    )));
                }
                Ok(Message::new(role, content))
            })
            .collect::<Result<Vec<_>>>()?
    } else if v.get("prompt").is_some() || v.get("completion").is_some() {
        vec![
            Message::new("user", str_field(&v, "prompt").map_err(Error::Input)?),
            Message::new(
                "assistant",
                str_field(&v, "completion").map_err(Error::Input)?,
            ),
        ]
    } else {
        return Err(Error::Input(
            "expected {\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...}".into(),
        ));
    };
    if !msgs.iter().any(|m| m.role == "assistant") {
        return Err(Error::Input(
            "the conversation has no assistant turn (nothing to learn)".into(),
        ));
    }
    Ok(msgs)
}

/// The ids of a conversation and, per id, whether it is an answer token the model is trained to
/// produce (assistant content and its end-of-turn token).
pub fn encode_conversation(
    tok: &ModelTokenizer,
    msgs: &[Message],
) -> Result<(Vec<u32>, Vec<bool>)> {
    let ids = tok.prompt_ids(msgs, false)?;
    let mut answer = vec![false; ids.len()];
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = tok.prompt_ids(&msgs[..i], true)?;
        let upto = tok.prompt_ids(&msgs[..=i], false)?;
        if !upto.starts_with(&before) || !ids.starts_with(&upto) {
            return Err(Error::Input(format!(
                "the chat template does not render message {i} as an extension of the \
                 conversation before it, so its tokens cannot be located"
            )));
        }
        let span = &upto[before.len()..];
        // Up to and including the end-of-turn token; the template's text after it is not the
        // model's to produce.
        let end = match tok.eos_id.and_then(|e| span.iter().rposition(|&t| t == e)) {
            Some(p) => p + 1,
            None => span.len(),
        };
        answer[before.len()..before.len() + end].fill(true);
    }
    Ok((ids, answer))
}

/// A training example from a conversation: inputs `ids[..n-1]`, targets the next token where it
/// is an answer token.
pub fn example(tok: &ModelTokenizer, msgs: &[Message], line: usize) -> Result<SftExample> {
    let (ids, answer) = encode_conversation(tok, msgs)?;
    let n = ids.len();
    let targets = (1..n)
        .map(|j| if answer[j] { ids[j] } else { IGNORE })
        .collect();
    Ok(SftExample {
        ids: ids[..n.saturating_sub(1)].to_vec(),
        targets,
        line,
    })
}

/// Examples of a JSONL file: bad lines are errors naming the line, or (with `skip_invalid`)
/// returned beside the examples.
pub fn read_examples(
    path: &Path,
    tok: &ModelTokenizer,
    max_len: usize,
    skip_invalid: bool,
) -> Result<(Vec<SftExample>, Vec<BadLine>)> {
    read_examples_within(path, tok, max_len, usize::MAX, skip_invalid)
}

/// [`read_examples`] for a model of `context` positions: a conversation longer than the
/// context (or than `max_len`) is a bad line.
pub fn read_examples_within(
    path: &Path,
    tok: &ModelTokenizer,
    max_len: usize,
    context: usize,
    skip_invalid: bool,
) -> Result<(Vec<SftExample>, Vec<BadLine>)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (line, msgs) in read_chat_jsonl(path)? {
        let ex = msgs.and_then(|m| example(tok, &m, line)).and_then(|ex| {
            let n = ex.ids.len() + 1;
            if n > context && context < max_len {
                Err(Error::Input(format!(
                    "{n} tokens, over the model's context of {context} tokens"
                )))
            } else if n > max_len {
                Err(Error::Input(format!(
                    "{n} tokens, over the limit of {max_len} (--max-len)"
                )))
            } else {
                Ok(ex)
            }
        });
        match ex {
            Ok(ex) => good.push(ex),
            Err(e) => {
                let reason = e.to_string();
                if !skip_invalid {
                    return Err(Error::Input(format!(
                        "{}:{line}: {reason} (--skip-invalid leaves such lines out)",
                        path.display()
                    )));
                }
                bad.push(BadLine { line, reason });
            }
        }
    }
    if good.is_empty() {
        return Err(Error::Input(format!(
            "{}: no usable examples",
            path.display()
        )));
    }
    Ok((good, bad))
}

/// How the model is adapted and trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftOptions {
    /// LoRA rank; 0 = full fine-tuning of every weight (on the dequantized model).
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up (linear), then linear decay to zero.
    pub warmup_ratio: f64,
    /// Stop after this many steps (0 = the epochs decide).
    pub max_steps: usize,
    /// Longest example in tokens.
    pub max_len: usize,
    /// Evaluate every this many steps (0 = after every epoch).
    pub eval_every: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Held-out fraction of the training file when no dev file is given.
    pub dev_fraction: f64,
    pub grad_clip: f64,
    pub skip_invalid: bool,
    pub seed: u64,
}

impl Default for SftOptions {
    fn default() -> Self {
        SftOptions {
            lora_rank: 16,
            lora_alpha: 32.0,
            lora_targets: ["q", "k", "v", "o", "gate", "up", "down"]
                .map(String::from)
                .to_vec(),
            epochs: 1,
            batch_size: 8,
            lr: 2e-4,
            weight_decay: 0.0,
            warmup_ratio: 0.03,
            max_steps: 0,
            max_len: 512,
            eval_every: 0,
            checkpoint_every: 100,
            dev_fraction: 0.1,
            grad_clip: 1.0,
            skip_invalid: false,
            seed: 42,
        }
    }
}

/// Where a run reads and writes.
pub struct SftRun<'a> {
    /// The base model as the user named it (recorded in the adapter).
    pub model: String,
    /// The resolved base: a `.gguf` file or a Hugging Face-layout directory.
    pub model_path: PathBuf,
    pub train: PathBuf,
    pub dev: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub max_time: Option<Duration>,
    pub stop: Option<&'a AtomicBool>,
}

/// What a run reports as it goes.
pub enum Event<'a> {
    Start {
        train: usize,
        dev: usize,
        skipped: &'a [BadLine],
        trainable: usize,
        total_steps: usize,
        resumed_at: usize,
    },
    Step(&'a StepStats),
    Eval {
        step: usize,
        e: &'a Evaluation,
    },
    Checkpoint(&'a Path),
}

/// The base model for training: frozen (LoRA) or as trainable parameters (full).
fn load_base(
    path: &Path,
    full: bool,
) -> Result<(TransformerConfig, Transformer, Option<ParamStore>)> {
    if path.is_file() {
        let g = Gguf::open(path)?;
        if full {
            let (cfg, tensors) =
                crate::models::gguf_loader::gguf_tensors(&g, DType::F32, &Device::Cpu)?;
            let params = ParamStore::from_tensors(&cfg, &tensors, DType::F32, path)?;
            let model = Transformer::from_params(&cfg, &params)?;
            return Ok((cfg, model, Some(params)));
        }
        let m = load_gguf_frozen(&g)?;
        return Ok((m.cfg.clone(), m, None));
    }
    let dir = crate::hub::model_dir(path)?;
    let cfg = TransformerConfig::from_file(dir.join("config.json"))?;
    let st = dir.join("model.safetensors");
    let tensors = crate::weights::safetensors::load_safetensors(&st, &Device::Cpu)?;
    if full {
        let params = ParamStore::from_tensors(&cfg, &tensors, DType::F32, &st)?;
        let model = Transformer::from_params(&cfg, &params)?;
        return Ok((cfg, model, Some(params)));
    }
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let model = Transformer::from_tensors(&cfg, &tensors, &st)?;
    Ok((cfg, model, None))
}

/// The saved trainer state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    step: usize,
    epoch: usize,
    batches_done: usize,
    adam_step: u64,
    rng: Rng,
    best: Option<f64>,
    since_best: usize,
    options: SftOptions,
    model: String,
}

struct SftObjective<'a> {
    model: Transformer,
    params: &'a ParamStore,
    o: &'a SftOptions,
    train: &'a [SftExample],
    dev: &'a [SftExample],
    pad: u32,
    cursor: EpochCursor,
    saver: &'a dyn Fn(&Path) -> Result<()>,
    out: &'a Path,
    tok: &'a ModelTokenizer,
    cfg: &'a TransformerConfig,
    run_model: &'a str,
    obs: &'a mut dyn FnMut(Event<'_>),
    best: Option<f64>,
    since_best: usize,
}

/// (B, T) ids right-padded with `pad`, and the targets (B·T) with [`IGNORE`] at padding.
fn pad_batch(exs: &[&SftExample], pad: u32) -> Result<(Tensor, Vec<u32>)> {
    let t = exs.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
    let b = exs.len();
    let mut ids = vec![pad; b * t];
    let mut targets = vec![IGNORE; b * t];
    for (i, e) in exs.iter().enumerate() {
        ids[i * t..i * t + e.ids.len()].copy_from_slice(&e.ids);
        targets[i * t..i * t + e.targets.len()].copy_from_slice(&e.targets);
    }
    Ok((Tensor::from_vec(ids, (b, t), &Device::Cpu)?, targets))
}

/// Dev loss (mean over answer tokens) and greedy exact match, in batches of `batch`.
pub fn score(
    model: &Transformer,
    exs: &[SftExample],
    pad: u32,
    batch: usize,
) -> Result<(f64, f64, usize)> {
    let (mut loss_sum, mut tokens, mut correct) = (0.0f64, 0usize, 0usize);
    let lens: Vec<usize> = exs.iter().map(|e| e.ids.len()).collect();
    let mut order: Vec<usize> = (0..exs.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    for chunk in order.chunks(batch.max(1)) {
        let b: Vec<&SftExample> = chunk.iter().map(|&i| &exs[i]).collect();
        let (ids, targets) = pad_batch(&b, pad)?;
        let h = model.forward_hidden(&ids, None)?; // (B, T, C)
        let (bb, t, _) = h.dims3()?;
        // Every example has an answer (read_examples checks), so the selection is never empty.
        let sel = TargetRows::select(&h, &targets)?;
        let (rows, n) = (&sel.rows, sel.rows.len());
        let logits = model.head(&sel.hidden)?.to_vec2::<f32>()?;
        let mut ok = vec![true; bb];
        for (row, &r) in logits.iter().zip(rows) {
            let want = targets[r as usize] as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max as f64
                + row
                    .iter()
                    .map(|&z| ((z - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            loss_sum += lse - row[want] as f64;
            // The first maximum, as greedy decoding's arg-max takes it.
            let arg = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |a, (j, &z)| if z > a.1 { (j, z) } else { a },
                )
                .0;
            if arg != want {
                ok[r as usize / t] = false;
            }
        }
        tokens += n;
        correct += ok.iter().filter(|&&k| k).count();
    }
    Ok((
        loss_sum / tokens.max(1) as f64,
        correct as f64 / exs.len().max(1) as f64,
        tokens,
    ))
}

impl Objective for SftObjective<'_> {
    fn params(&self) -> &ParamStore {
        self.params
    }

    fn start_epoch(&mut self, epoch: usize, _rng: &mut Rng) -> Result<()> {
        // The order of an epoch depends on the seed and the epoch alone (a resumed run finds it).
        let lens: Vec<usize> = self.train.iter().map(|e| e.ids.len()).collect();
        let mut rng = Rng::derived(self.o.seed, epoch as u64);
        let batches = epoch_batches(&lens, self.o.batch_size, true, &mut rng);
        self.cursor.start(epoch, batches);
        Ok(())
    }

    fn next_micro(&mut self, _rng: &mut Rng, shard: Shard) -> Result<Option<Micro>> {
        let Some(batch) = self.cursor.next_batch() else {
            return Ok(None);
        };
        let exs: Vec<&SftExample> = shard.take(batch).iter().map(|&i| &self.train[i]).collect();
        if exs.is_empty() {
            return Micro::empty().map(Some);
        }
        let (ids, targets) = pad_batch(&exs, self.pad)?;
        let items = exs.iter().map(|e| e.ids.len()).sum();
        let terms = exs.iter().map(|e| e.answer_tokens()).sum();
        let loss = self.model.loss_masked(&ids, &targets, None)?;
        Ok(Some(Micro { loss, items, terms }))
    }

    fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        if self.dev.is_empty() {
            return Ok(None);
        }
        let (loss, exact, tokens) = score(&self.model, self.dev, self.pad, self.o.batch_size)?;
        Ok(Some(Evaluation {
            loss,
            score: None,
            log: json!({"dev_loss": loss, "dev_exact_match": exact, "dev_tokens": tokens}),
        }))
    }

    fn on_eval(&mut self, step: usize, e: &mut Evaluation, best: bool) -> Result<()> {
        if best {
            (self.saver)(&self.out.join("best"))?;
            self.best = Some(-e.loss);
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        e.log["best"] = json!(best);
        (self.obs)(Event::Eval { step, e });
        Ok(())
    }

    fn on_step(&mut self, s: &StepStats, opt: &AdamW, rng: &Rng, _elapsed: f64) -> Result<()> {
        (self.obs)(Event::Step(s));
        let every = self.o.checkpoint_every;
        if every > 0 && s.step.is_multiple_of(every) {
            self.checkpoint(s.step, opt, rng)?;
        }
        Ok(())
    }

    fn items_name(&self) -> &'static str {
        "tokens"
    }
}

impl SftObjective<'_> {
    fn checkpoint(&mut self, step: usize, opt: &AdamW, rng: &Rng) -> Result<()> {
        let (epoch, batches_done) = self.cursor.resume_point();
        let state = State {
            step,
            epoch,
            batches_done,
            adam_step: opt.step,
            rng: rng.clone(),
            best: self.best,
            since_best: self.since_best,
            options: self.o.clone(),
            model: self.run_model.to_string(),
        };
        let dir = self.out.join("checkpoint");
        let named = Transformer::named_tensors(self.params);
        write_dir(
            &dir,
            &json!({"base_model": self.run_model, "architecture": self.cfg.arch}),
            &crate::weights::safetensors::safetensors_bytes(&named)?,
            &self.tok.tokenizer,
            self.params,
            (&opt.m, &opt.v),
            &state,
        )?;
        (self.obs)(Event::Checkpoint(&dir));
        Ok(())
    }
}

/// Write a fully fine-tuned model in Hugging Face layout: config, weights, tokenizer and its
/// chat template.
fn save_full(
    dir: &Path,
    cfg: &TransformerConfig,
    params: &ParamStore,
    tok: &ModelTokenizer,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_config_json())?.as_bytes(),
    )?;
    write_atomic(
        &dir.join("model.safetensors"),
        &Transformer::safetensors_bytes(params)?,
    )?;
    write_atomic(
        &dir.join("tokenizer.json"),
        tok.tokenizer.to_json()?.as_bytes(),
    )?;
    let name = |id: Option<u32>| id.and_then(|i| tok.tokenizer.id_to_token(i));
    let tc = json!({
        "chat_template": tok.template.as_ref().map(|t| t.source().to_string()),
        "bos_token": name(tok.bos_id),
        "eos_token": name(tok.eos_id),
        "add_bos_token": tok.add_bos,
    });
    write_atomic(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tc)?.as_bytes(),
    )
}

/// Fine-tune (or resume); returns how the run ended. The adapter (or the full model) is written
/// into `run.out` at the end, the best by dev loss into `run.out/best`.
pub fn finetune_chat(
    run: &SftRun<'_>,
    opts: &SftOptions,
    obs: &mut dyn FnMut(Event<'_>),
) -> Result<Ended> {
    let ckpt = run.out.join("checkpoint");
    let state: Option<State> = if run.resume {
        if !ckpt.is_dir() {
            return Err(Error::Input(format!(
                "--resume: {} has no checkpoint to resume from",
                run.out.display()
            )));
        }
        Some(read_state(&ckpt)?)
    } else {
        None
    };
    let o = state
        .as_ref()
        .map_or_else(|| opts.clone(), |s| s.options.clone());
    if o.batch_size == 0 {
        return Err(Error::Config("--batch-size must be at least 1".into()));
    }
    let tok = ModelTokenizer::load(&run.model_path)?;
    tok.template()?;
    let pad = tok
        .eos_id
        .ok_or_else(|| Error::Config("the tokenizer has no end-of-sequence token".into()))?;
    let full = o.lora_rank == 0;
    let (cfg, mut model, full_params) = load_base(&run.model_path, full)?;
    let context = cfg.max_position_embeddings;
    let read = |p: &Path| read_examples_within(p, &tok, o.max_len, context, o.skip_invalid);
    let (all, skipped) = read(&run.train)?;
    let (train, dev, mut skipped) = match &run.dev {
        Some(p) => {
            let (d, bad) = read(p)?;
            let mut s = skipped;
            s.extend(bad);
            (all, d, s)
        }
        None => {
            let (tr, dv) = super::data::split_dev(all.len(), o.dev_fraction, o.seed)?;
            (
                tr.iter().map(|&i| all[i].clone()).collect::<Vec<_>>(),
                dv.iter().map(|&i| all[i].clone()).collect::<Vec<_>>(),
                skipped,
            )
        }
    };
    skipped.sort_by_key(|b| b.line);
    let base = BaseId::of(&run.model, &cfg);
    let lora_cfg = if full {
        None
    } else {
        Some(LoraConfig::new(
            o.lora_rank,
            o.lora_alpha,
            &o.lora_targets,
            &cfg,
        )?)
    };
    let params = match (&full_params, &lora_cfg) {
        (Some(p), _) => ParamStore {
            specs: p.specs.clone(),
            vars: p.vars.clone(),
        },
        (None, Some(l)) => {
            let mut rng = Rng::new(o.seed);
            ParamStore::init_specs(l.specs(&cfg)?, &mut rng, DType::F32, &Device::Cpu)?
        }
        (None, None) => unreachable!("LoRA or full"),
    };
    if let Some(s) = &state {
        if s.model != run.model {
            return Err(Error::Input(format!(
                "the checkpoint fine-tunes '{}', not '{}'",
                s.model, run.model
            )));
        }
        let st = ckpt.join("model.safetensors");
        let saved = crate::weights::safetensors::load_safetensors(&st, &Device::Cpu)?;
        for (spec, var) in params.specs.iter().zip(&params.vars) {
            var.set(&crate::models::params::fetch(
                &saved,
                &spec.name,
                &spec.shape,
                &st,
            )?)?;
        }
    }
    if let Some(l) = &lora_cfg {
        lora::attach(&mut model, l, &params.tensors())?;
    }
    let batches_per_epoch = train.len().div_ceil(o.batch_size);
    let total_steps = if o.max_steps > 0 {
        o.max_steps
    } else {
        batches_per_epoch * o.epochs
    };
    let mut opt = AdamW::new(&params, 0.9, 0.999, 1e-8, o.weight_decay)?;
    let mut rng = Rng::new(o.seed).fork();
    let mut run_state = RunState::at_step(0);
    let mut skip = 0;
    if let Some(s) = &state {
        let (m, v) = read_moments(&ckpt, &params, &Device::Cpu)?;
        opt.m = m;
        opt.v = v;
        opt.step = s.adam_step;
        rng = s.rng.clone();
        run_state = RunState::resumed(s.step, s.epoch, s.best, s.since_best);
        skip = s.batches_done;
    }
    obs(Event::Start {
        train: train.len(),
        dev: dev.len(),
        skipped: &skipped,
        trainable: params.num_params(),
        total_steps,
        resumed_at: run_state.step,
    });
    // Data-parallel: rank 0 alone writes (metrics, checkpoints, the adapter).
    let comm = crate::dist::world();
    let root = comm.rank() == 0;
    let metrics = run.out.join("metrics.jsonl");
    if root {
        std::fs::create_dir_all(&run.out).map_err(|e| Error::io(&run.out, e))?;
        crate::train::trainer::trim_metrics(&metrics, run_state.step)?;
    }
    let warmup = (o.warmup_ratio * total_steps as f64).round() as usize;
    let plan = Plan {
        schedule: Schedule::Linear {
            lr: o.lr,
            warmup,
            total: total_steps,
        },
        max_steps: total_steps,
        epochs: o.epochs.max(1),
        grad_accum: 1,
        grad_clip: o.grad_clip,
        eval: if o.eval_every > 0 {
            EvalAt::Steps(o.eval_every)
        } else {
            EvalAt::Epochs
        },
        patience: 0,
        max_time: run.max_time,
        stop: run.stop,
        metrics: Some(metrics),
        comm,
    };
    let saver = |dir: &Path| -> Result<()> {
        match &lora_cfg {
            Some(l) => Adapter::from_params(l, base.clone(), &params).save(dir, &cfg),
            None => save_full(dir, &cfg, &params, &tok),
        }
    };
    let mut obj = SftObjective {
        model,
        params: &params,
        o: &o,
        train: &train,
        dev: &dev,
        pad,
        cursor: EpochCursor::resuming(skip),
        saver: &saver,
        out: &run.out,
        tok: &tok,
        cfg: &cfg,
        run_model: &run.model,
        obs,
        best: state.as_ref().and_then(|s| s.best),
        since_best: state.as_ref().map_or(0, |s| s.since_best),
    };
    let ended =
        crate::train::run::run(&mut obj, &mut opt, &mut rng, &mut run_state, &plan, &mut ())?;
    if root {
        obj.checkpoint(run_state.step, &opt, &rng)?;
        saver(&run.out)?;
    }
    Ok(ended)
}

/// What [`eval_generation`] found.
#[derive(Clone, Debug, Serialize)]
pub struct GenerationEval {
    pub examples: usize,
    /// Answers equal to the reference (trimmed, case-insensitive, final punctuation ignored).
    pub exact_match: f64,
    /// With labels: the first label word in the answer is the reference's (zero-shot answers
    /// such as "Great." or "The review is great" count); `None` without labels.
    pub label_accuracy: Option<f64>,
    /// Answers naming no label at all.
    pub no_label: Option<usize>,
}

fn normalize(s: &str) -> String {
    s.trim()
        .trim_end_matches(['.', '!', '?'])
        .trim()
        .to_lowercase()
}

/// The first of `labels` that occurs in `text` as a whole word (case-insensitive).
pub fn first_label<'a>(text: &str, labels: &'a [String]) -> Option<&'a String> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words
        .iter()
        .find_map(|w| labels.iter().find(|l| l.to_lowercase() == *w))
}

/// Greedy answers of `model` to each conversation's last assistant turn (the turns before it as
/// the prompt, through the chat template), scored against that turn. `on_answer` sees each.
pub fn eval_generation(
    model: &crate::infer::Decoder,
    tok: &ModelTokenizer,
    convs: &[Vec<Message>],
    max_tokens: usize,
    labels: &[String],
    on_answer: &mut dyn FnMut(usize, &str, &str),
) -> Result<GenerationEval> {
    let params = crate::generate::SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    };
    let (mut exact, mut hit, mut none) = (0usize, 0usize, 0usize);
    for (i, msgs) in convs.iter().enumerate() {
        let last = msgs
            .iter()
            .rposition(|m| m.role == "assistant")
            .ok_or_else(|| Error::Input(format!("conversation {}: no assistant turn", i + 1)))?;
        let reference = &msgs[last].content;
        let prompt = tok.prompt_ids(&msgs[..last], true)?;
        let g = crate::generate::generate(model, &tok.tokenizer, &prompt, &params, |_| true)?;
        if normalize(&g.text) == normalize(reference) {
            exact += 1;
        }
        if !labels.is_empty() {
            match first_label(&g.text, labels) {
                Some(l) if normalize(l) == normalize(reference) => hit += 1,
                Some(_) => {}
                None => none += 1,
            }
        }
        on_answer(i, &g.text, reference);
    }
    let n = convs.len().max(1) as f64;
    Ok(GenerationEval {
        examples: convs.len(),
        exact_match: exact as f64 / n,
        label_accuracy: (!labels.is_empty()).then(|| hit as f64 / n),
        no_label: (!labels.is_empty()).then_some(none),
    })
}
