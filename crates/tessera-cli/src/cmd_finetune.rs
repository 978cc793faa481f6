//! `tessera finetune classify|ner`, `tessera classify` and `tessera tag`.

use crate::progress::say;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use std::io::Write;
use std::path::{Path, PathBuf};
use tessera::tasks::classify::Classifier;
use tessera::tasks::data::{read_conll, read_labelled, read_texts, split_dev};
use tessera::tasks::finetune::{finetune, Event, FinetuneOptions, TaskData};
use tessera::Device;

#[derive(Subcommand, Debug)]
pub enum FinetuneCmd {
    /// Text classification: JSONL `{"text", "label"}`; a head on the pooled [CLS] output.
    Classify(FinetuneArgs),
    /// Named entities: CoNLL `word<TAB>BIO-tag`; a head on every token (first-piece labelling).
    Ner(FinetuneArgs),
    /// A chat model on conversations (JSONL): LoRA adapters (PEFT layout) or every weight.
    Chat(crate::cmd_sft::ChatArgs),
}

/// Flags whose defaults differ between fine-tuning and training from scratch are options:
/// `None` takes [`FinetuneOptions::default`] or [`FinetuneOptions::scratch`].
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Pretrained encoder (a known name, a name in the cache or a Hugging Face BERT directory),
    /// or a BERT config file such as configs/bert-tiny.json to train from scratch (with a
    /// WordPiece tokenizer trained on the training texts unless --tokenizer is given).
    #[arg(long)]
    model: String,
    /// Training data.
    #[arg(long)]
    train: PathBuf,
    /// Dev data (same format); without it, --dev-fraction of the training data is held out.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Fraction of the training data held out as dev set when --dev is not given.
    #[arg(long, default_value_t = 0.1, visible_alias = "dev-split")]
    dev_fraction: f64,
    /// Seed of the dev split (default: --seed); fix it to compare training seeds on one split.
    #[arg(long)]
    split_seed: Option<u64>,
    /// Output directory (the best model in Hugging Face layout, metrics.jsonl, loss.png).
    #[arg(long)]
    out: PathBuf,
    /// Epochs [default: 3; from scratch 4].
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size [default: 16; from scratch 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 5e-5; from scratch 5e-4].
    #[arg(long)]
    lr: Option<f64>,
    /// Longest input in tokens ([CLS] and [SEP] included); longer texts are truncated.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Which part of an over-long text to keep: head (the first tokens), tail (the last) or
    /// head-tail (the first quarter and the last three quarters). Text classification only;
    /// saved with the model, so `tessera classify` cuts the same way.
    #[arg(long, default_value = "head")]
    truncation: tessera::tasks::Truncation,
    /// AdamW weight decay on projection matrices [default: 0.01; from scratch 0.05].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Fraction of the steps spent warming up [default: 0.1; from scratch 0.06].
    #[arg(long)]
    warmup_ratio: Option<f64>,
    /// Stop after this many epochs without a better dev score, 0 = never [default: 2].
    #[arg(long)]
    patience: Option<usize>,
    /// Batch texts of similar length together [default: false; from scratch true].
    #[arg(long)]
    group_by_length: Option<bool>,
    /// From scratch: target vocabulary size of the trained tokenizer [default: the config's
    /// vocab_size, else 8000].
    #[arg(long)]
    vocab_size: Option<usize>,
    /// From scratch: use this tokenizer.json (BERT-style: [PAD] [UNK] [CLS] [SEP]) instead of
    /// training one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// From scratch: keep case and accents in the trained tokenizer.
    #[arg(long)]
    cased: bool,
    /// From scratch: learn multi-character CJK pieces (runs of CJK characters are words to the
    /// tokenizer trainer) instead of one token per character.
    #[arg(long)]
    cjk_words: bool,
    /// Epochs of masked-language-model pretraining on the training texts before the task
    /// [default: 0; from scratch 10].
    #[arg(long)]
    mlm_epochs: Option<usize>,
    /// Peak learning rate of the MLM pretraining [default: 1e-3].
    #[arg(long)]
    mlm_lr: Option<f64>,
    /// More unlabelled text for the MLM pretraining (one text per line, or JSONL with `text`),
    /// besides the training texts; from scratch the tokenizer is trained on it too.
    #[arg(long)]
    mlm_data: Option<PathBuf>,
    /// Dropout on hidden states and attention [default: the model config's; from scratch 0.2].
    #[arg(long)]
    dropout: Option<f32>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// A fine-tuned model directory (`tessera finetune classify --out`).
    #[arg(long)]
    model: PathBuf,
    /// One text per line, or JSONL with a `text` field.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// A fine-tuned NER model directory (`tessera finetune ner --out`).
    #[arg(long)]
    model: PathBuf,
    /// One text per line (split into words at whitespace), or JSONL with a `text` field.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

fn split<T: Clone>(
    all: Vec<T>,
    dev: Option<Vec<T>>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<T>, Vec<T>)> {
    Ok(match dev {
        Some(d) => (all, d),
        None => {
            let (tr, dv) = split_dev(all.len(), fraction, seed)?;
            (
                tr.iter().map(|&i| all[i].clone()).collect(),
                dv.iter().map(|&i| all[i].clone()).collect(),
            )
        }
    })
}

fn check_out(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    Ok(())
}

pub fn run(cmd: FinetuneCmd) -> Result<()> {
    let (a, data) = match cmd {
        FinetuneCmd::Classify(a) => {
            let all = read_labelled(&a.train)?;
            let dev = a.dev.as_deref().map(read_labelled).transpose()?;
            let (train, dev) = split(all, dev, a.dev_fraction, a.split_seed.unwrap_or(a.seed))?;
            (a, TaskData::Classify { train, dev })
        }
        FinetuneCmd::Chat(a) => return crate::cmd_sft::run(a),
        FinetuneCmd::Ner(a) => {
            let all = read_conll(&a.train)?;
            let dev = a.dev.as_deref().map(read_conll).transpose()?;
            let (train, dev) = split(all, dev, a.dev_fraction, a.split_seed.unwrap_or(a.seed))?;
            (a, TaskData::Ner { train, dev })
        }
    };
    check_out(&a.out)?;
    let dir = tessera::hub::resolve(&a.model)?;
    let scratch = tessera::tasks::scratch::is_scratch_config(&dir);
    let base = if scratch {
        FinetuneOptions::scratch()
    } else {
        FinetuneOptions::default()
    };
    let opts = FinetuneOptions {
        epochs: a.epochs.unwrap_or(base.epochs),
        batch_size: a.batch_size.unwrap_or(base.batch_size),
        lr: a.lr.unwrap_or(base.lr),
        weight_decay: a.weight_decay.unwrap_or(base.weight_decay),
        warmup_ratio: a.warmup_ratio.unwrap_or(base.warmup_ratio),
        max_len: a.max_len,
        truncation: a.truncation,
        seed: a.seed,
        patience: a.patience.unwrap_or(base.patience),
        grad_clip: 1.0,
        dropout: a.dropout.or(base.dropout),
        max_steps: a.max_steps,
        vocab_size: a.vocab_size,
        tokenizer: a.tokenizer.clone(),
        cased: a.cased,
        cjk_words: a.cjk_words,
        group_by_length: a.group_by_length.unwrap_or(base.group_by_length),
        mlm_epochs: a.mlm_epochs.unwrap_or(base.mlm_epochs),
        mlm_lr: a.mlm_lr.unwrap_or(base.mlm_lr),
        mlm_data: a.mlm_data.clone(),
    };
    let stop = crate::interrupt_flag();
    let bar = crate::progress::steps_bar(1);
    let mut t_phase = std::time::Instant::now();
    let mut log_every = 1;
    let out_dir = a.out.clone();
    let mut on_event = |e: Event<'_>| match e {
        Event::Scratch {
            vocab_size,
            tokenizer_trained,
            parameters,
        } => say(
            &bar,
            format!(
                "training from scratch: {parameters} parameters; {} ({vocab_size} tokens)",
                match (tokenizer_trained, opts.mlm_data.is_some()) {
                    (true, false) => "WordPiece tokenizer trained on the training texts",
                    (true, true) =>
                        "WordPiece tokenizer trained on the training texts and --mlm-data",
                    (false, _) => "tokenizer from --tokenizer",
                }
            ),
        ),
        Event::Start {
            total_steps,
            train,
            dev,
            labels,
        } => {
            bar.set_length(total_steps as u64);
            log_every = (total_steps / 20).max(1);
            say(&bar, format!(
                "{train} training / {dev} dev examples, {} labels, {total_steps} steps (max length {} tokens; longer inputs are truncated, keeping the {})",
                labels.len(),
                opts.max_len,
                opts.truncation.kept()
            ));
        }
        Event::Pretrain {
            step,
            total,
            loss,
            lr,
        } => {
            if step == 1 {
                bar.set_length(total as u64);
            }
            bar.set_position(step as u64);
            let msg = format!("MLM loss {loss:.4} | lr {lr:.2e}");
            bar.set_message(msg.clone());
            if bar.is_hidden() && (step % (total / 20).max(1) == 0 || step == 1) {
                eprintln!("MLM step {step}/{total} {msg}");
            }
        }
        Event::PretrainEpoch {
            epoch,
            loss,
            examples_per_s,
        } => say(
            &bar,
            format!("MLM epoch {epoch}: loss {loss:.4} | {examples_per_s:.1} ex/s"),
        ),
        Event::Step {
            step,
            total,
            loss,
            lr,
        } => {
            if step == 1 {
                bar.set_length(total as u64);
                t_phase = std::time::Instant::now();
            }
            bar.set_position(step as u64);
            // The clock starts when step 1 ends: the rate counts the steps after it.
            let rate = match step {
                1 => String::new(),
                _ => format!(
                    " | {:.1} ex/s",
                    (step - 1) as f64 * opts.batch_size as f64 / t_phase.elapsed().as_secs_f64()
                ),
            };
            let msg = format!("loss {loss:.4} | lr {lr:.2e}{rate}");
            bar.set_message(msg.clone());
            if bar.is_hidden() && (step % log_every == 0 || step == 1) {
                eprintln!("step {step}/{total} {msg}");
            }
        }
        Event::Epoch(r) => {
            say(
                &bar,
                format!(
                    "epoch {}: train loss {:.4} | dev loss {:.4} | dev {} | {:.1} train ex/s{}",
                    r.epoch,
                    r.train_loss,
                    r.dev_loss,
                    r.dev,
                    r.train_examples_per_s,
                    if r.best { " | best, saved" } else { "" }
                ),
            );
            if let Err(e) = crate::plot::loss_png(&out_dir) {
                say(&bar, format!("loss.png: {e:#}"));
            }
        }
    };
    let reports = finetune(&dir, &data, &opts, &a.out, Some(&stop), &mut on_event)?;
    bar.finish_and_clear();
    if !tessera::dist::is_root() {
        return Ok(()); // rank 0 of a data-parallel job reports
    }
    let best = reports
        .iter()
        .rev()
        .find(|r| r.best)
        .context("no epoch finished")?;
    eprintln!(
        "best dev score {:.4} at epoch {}; model in {}",
        best.score,
        best.epoch,
        a.out.display()
    );
    println!(
        "{}",
        serde_json::json!({"best_epoch": best.epoch, "score": best.score, "dev": best.dev})
    );
    Ok(())
}

pub fn run_classify(a: ClassifyArgs) -> Result<()> {
    let texts = read_texts(&a.input)?;
    let model = Classifier::load(&a.model, &Device::Cpu)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let probs = model.predict(&refs, a.batch_size)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for p in probs {
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|x| x.0)
            .unwrap_or(0);
        let scores: serde_json::Map<String, serde_json::Value> = model
            .labels
            .iter()
            .zip(&p)
            .map(|(l, s)| (l.clone(), serde_json::json!(s)))
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"label": model.labels[best], "scores": scores})
        )?;
    }
    out.flush()?;
    Ok(())
}

pub fn run_tag(a: TagArgs) -> Result<()> {
    let texts = read_texts(&a.input)?;
    let model = Classifier::load(&a.model, &Device::Cpu)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ents = model.tag_texts(&refs, a.batch_size)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in ents {
        writeln!(out, "{}", serde_json::json!({ "entities": e }))?;
    }
    out.flush()?;
    Ok(())
}
