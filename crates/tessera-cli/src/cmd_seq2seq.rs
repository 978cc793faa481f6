//! `tessera train --task translation` and `tessera translate`: the encoder-decoder's commands.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera::generate::beam::{EarlyStopping, Seq2SeqGenerate};
use tessera::models::seq2seq::Seq2Seq;
use tessera::tasks::translate::{
    parse_config, source_ids, train_translation, translate_ids, Event, TranslationRun,
};
use tessera::tokenizer::Tokenizer;
use tessera::train::Ended;

/// Seq2seq configs built into the program, usable by name.
pub const BUILTIN_CONFIGS: [(&str, &str); 2] = [
    (
        "seq2seq-small",
        include_str!("../../../configs/seq2seq-small.json"),
    ),
    (
        "seq2seq-tiny",
        include_str!("../../../configs/seq2seq-tiny.json"),
    ),
];

/// What `tessera train --task translation` needs from the command line.
pub struct TrainTranslation<'a> {
    pub data: &'a Path,
    pub src: Option<&'a str>,
    pub tgt: Option<&'a str>,
    pub config: &'a str,
    pub out: &'a Path,
    pub tokenizer: Option<&'a Path>,
    pub resume: bool,
    pub overwrite: bool,
    pub max_steps: Option<usize>,
    pub max_time: Option<f64>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    pub eval_every: Option<usize>,
    pub no_plot: bool,
}

pub fn train(a: TrainTranslation<'_>) -> Result<()> {
    let (Some(src), Some(tgt)) = (a.src, a.tgt) else {
        bail!("--task translation needs --src and --tgt (the TSV columns, e.g. --src en --tgt es)");
    };
    let config = if a.resume {
        None
    } else {
        let text = if Path::new(a.config).exists() {
            tessera::error::read_text(a.config)?
        } else if let Some((_, t)) = BUILTIN_CONFIGS.iter().find(|(n, _)| *n == a.config) {
            t.to_string()
        } else {
            bail!(
                "config '{}' is neither a file nor a built-in seq2seq config (seq2seq-small, \
                 seq2seq-tiny)",
                a.config
            )
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("config {}", a.config))?;
        let (m, mut t) = parse_config(&v).with_context(|| format!("config {}", a.config))?;
        if let Some(n) = a.max_steps {
            t.max_steps = n;
        }
        if let Some(lr) = a.lr {
            t.lr = lr;
        }
        if let Some(s) = a.seed {
            t.seed = s;
        }
        if let Some(e) = a.eval_every {
            t.eval_every = e;
        }
        t.validate()?;
        if tessera::dist::is_root() {
            crate::cmd_train::prepare_out(a.out, a.overwrite, &["checkpoint", "best"])?;
        }
        Some((m, t))
    };
    let stop = crate::interrupt_flag();
    let run = TranslationRun {
        data: a.data.to_path_buf(),
        src: src.to_string(),
        tgt: tgt.to_string(),
        out: a.out.to_path_buf(),
        resume: a.resume,
        tokenizer: a.tokenizer.map(Path::to_path_buf),
        max_time: a.max_time.map(|m| Duration::from_secs_f64(m * 60.0)),
        stop: Some(&stop),
    };
    let bar = crate::progress::steps_bar(0);
    let plot = (!a.no_plot).then(|| a.out.to_path_buf());
    let max_steps = a.max_steps;
    let mut total = 0usize;
    let mut obs = |e: Event<'_>| match e {
        Event::Start {
            train,
            dev,
            skipped,
            dev_groups,
            parameters,
            vocab_size,
            resumed_at,
        } => {
            eprintln!(
                "{parameters} parameters | vocabulary {vocab_size} | {train} training pairs \
                 ({skipped} over max_len left out), {dev} dev pairs from {} held-out groups \
                 ({})",
                dev_groups.len(),
                dev_groups.join(", ")
            );
            if resumed_at > 0 {
                eprintln!("resuming at step {resumed_at}");
            }
            bar.set_position(resumed_at as u64);
            bar.reset_eta();
        }
        Event::Step(s) => {
            if total == 0 {
                total = max_steps.unwrap_or(0).max(s.step);
            }
            bar.set_position(s.step as u64);
            bar.set_message(format!(
                "loss {:.4} | lr {:.2e} | {:.0} tok/s",
                s.loss,
                s.lr,
                s.items as f64 / s.seconds.max(1e-9)
            ));
            if bar.is_hidden() && (s.step.is_multiple_of(50) || s.step == 1) {
                eprintln!("step {} loss {:.4} lr {:.2e}", s.step, s.loss, s.lr);
            }
        }
        Event::Eval { step, e, best } => {
            bar.println(format!(
                "step {step}: dev loss {:.4} | BLEU {:.2} | chrF {:.2}{}",
                e.loss,
                e.log["bleu"].as_f64().unwrap_or(0.0),
                e.log["chrf"].as_f64().unwrap_or(0.0),
                if best { " (best, saved)" } else { "" }
            ));
            if let Some(dir) = &plot {
                if let Err(e) = crate::plot::loss_png(dir) {
                    bar.println(format!("loss.png: {e:#}"));
                }
            }
        }
        Event::Checkpoint(_) => {}
    };
    let config_steps = config.as_ref().map(|c| c.1.max_steps);
    if let Some(n) = config_steps {
        bar.set_length(n as u64);
    }
    let device = crate::cmd_train::candle_core_device();
    let ended = train_translation(&run, config, &device, &mut obs)?;
    bar.finish_and_clear();
    let how = match ended {
        Ended::Finished | Ended::EarlyStop => "finished",
        Ended::TimeLimit => "stopped at the time limit",
        Ended::Interrupted => "interrupted",
    };
    eprintln!(
        "{how}; best model in {}, resumable checkpoint in {}",
        a.out.join("best").display(),
        a.out.join("checkpoint").display()
    );
    if ended != Ended::Finished {
        eprintln!(
            "continue with: tessera train --task translation --data {} --src {src} --tgt {tgt} \
             --out {} --resume",
            a.data.display(),
            a.out.display()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// A model directory (config.json of a Marian or T5 model, model.safetensors,
    /// tokenizer.json), e.g. a training run's `best/`.
    #[arg(long)]
    model: PathBuf,
    /// Read lines from this file instead of standard input.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Beam size (1 = greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Exponent of the length normalization of beam scores (transformers' `length_penalty`).
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f64,
    /// Beam search stops when `num_beams` hypotheses are finished.
    #[arg(long)]
    early_stopping: bool,
    /// Hypotheses per line (≤ --beam); more than one needs --json.
    #[arg(long, default_value_t = 1)]
    num_return_sequences: usize,
    /// Tokens generated per line at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Lines decoded together.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Sample instead of greedy decoding (with --beam 1): the temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sampling: keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sampling: nucleus mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed (line i of a batch draws from seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object per line: the translations with their scores.
    #[arg(long)]
    json: bool,
    /// Text put before each non-empty line (a T5 task prefix such as `translate English to
    /// German: `); `--json` still shows the line as read.
    #[arg(long, default_value = "")]
    prefix: String,
}

/// The input prefix a model's `config.json` gives `task` (`task_specific_params.TASK.prefix`,
/// e.g. T5's `"summarize: "`), if any.
pub fn task_prefix(dir: &Path, task: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["task_specific_params"][task]["prefix"]
        .as_str()
        .map(str::to_string)
}

/// A loaded translation model and its tokenizer.
pub fn load_seq2seq(dir: &Path) -> Result<(Seq2Seq, Tokenizer)> {
    if !dir.join("config.json").is_file() {
        bail!(
            "{}: not a model directory (no config.json); give a training run's best/ or a \
             Marian or T5 model directory",
            dir.display()
        );
    }
    let model = Seq2Seq::load_dir(dir, tessera::DType::F32, &tessera::Device::Cpu)
        .with_context(|| format!("loading {}", dir.display()))?;
    let tok = Tokenizer::from_file(dir.join("tokenizer.json"))
        .with_context(|| format!("{}: tokenizer", dir.display()))?;
    Ok((model, tok))
}

pub fn translate(a: TranslateArgs) -> Result<()> {
    if a.num_return_sequences > 1 && !a.json {
        bail!("--num-return-sequences above 1 needs --json (one line out per line in)");
    }
    let (model, tok) = load_seq2seq(&a.model)?;
    let opts = Seq2SeqGenerate {
        num_beams: a.beam,
        max_new_tokens: a
            .max_new_tokens
            .min(model.cfg.decoder.max_position_embeddings - 1),
        length_penalty: a.length_penalty,
        early_stopping: if a.early_stopping {
            EarlyStopping::Yes
        } else {
            EarlyStopping::No
        },
        num_return_sequences: a.num_return_sequences,
        sampling: (a.temperature > 0.0).then(|| tessera::generate::SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
            ..Default::default()
        }),
    };
    if opts.num_beams == 0 || opts.num_return_sequences > opts.num_beams {
        bail!("--beam must be at least 1 and --num-return-sequences at most --beam");
    }
    let eos = model.cfg.eos()?;
    let max_src = model.cfg.encoder.max_position_embeddings;
    let reader: Box<dyn BufRead> = match &a.input {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    // A file's lines are counted first (one streaming pass) for a bar with an ETA; stdin has
    // no known length, so it gets a counter.
    let total = match &a.input {
        Some(p) => Some(
            std::io::BufReader::new(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            )
            .lines()
            .count() as u64,
        ),
        None => None,
    };
    let bar = match total {
        Some(n) => {
            let b = ProgressBar::new(n);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} lines | {per_sec} [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            b
        }
        None => {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {pos} lines | {per_sec} [{elapsed_precise}]",
                )
                .expect("valid template"),
            );
            b
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut lines: Vec<String> = Vec::new();
    let mut line_no = 0usize;
    let mut flush = |lines: &mut Vec<String>, out: &mut BufWriter<_>| -> Result<()> {
        let mut ids: Vec<Vec<u32>> = Vec::with_capacity(lines.len());
        for l in lines.iter() {
            line_no += 1;
            let mut s = source_ids(&tok, &format!("{}{l}", a.prefix), eos)?;
            if s.len() > max_src {
                bar.println(format!(
                    "warning: line {line_no} has {} tokens; cut to the model's {max_src}",
                    s.len()
                ));
                s.truncate(max_src - 1);
                s.push(eos);
            }
            ids.push(s);
        }
        // Empty lines translate to empty lines (not through the model).
        let todo: Vec<usize> = (0..lines.len())
            .filter(|&i| !lines[i].trim().is_empty())
            .collect();
        let srcs: Vec<&[u32]> = todo.iter().map(|&i| ids[i].as_slice()).collect();
        let hyps = translate_ids(&model, &srcs, &opts, a.batch_size)?;
        let mut k = 0;
        for (i, line) in lines.iter().enumerate() {
            let hs = if todo.get(k) == Some(&i) {
                k += 1;
                &hyps[k - 1][..]
            } else {
                &[][..]
            };
            let texts: Vec<String> = hs
                .iter()
                .map(|h| tok.decode_text(h.content(eos)))
                .collect::<tessera::Result<_>>()?;
            if a.json {
                let items: Vec<serde_json::Value> = hs
                    .iter()
                    .zip(&texts)
                    .map(|(h, t)| serde_json::json!({"text": t, "score": h.score}))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"source": line, "translations": items})
                )?;
            } else {
                writeln!(out, "{}", texts.first().map(String::as_str).unwrap_or(""))?;
            }
        }
        out.flush()?;
        bar.inc(lines.len() as u64);
        lines.clear();
        Ok(())
    };
    let chunk = a.batch_size.max(1) * 4;
    for line in reader.lines() {
        let line = line.context("reading input")?;
        lines.push(line.trim_end_matches('\r').to_string());
        if lines.len() >= chunk {
            flush(&mut lines, &mut out)?;
        }
    }
    flush(&mut lines, &mut out)?;
    bar.finish_and_clear();
    Ok(())
}
