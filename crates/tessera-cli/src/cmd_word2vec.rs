//! `tessera word2vec`: train word vectors (skip-gram with negative sampling), query them.

use crate::progress::say;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use tessera_word2vec::{train, Corpus, Event, Neighbour, Options, WordVectors};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Word2vecArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Training (the default action).
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Train vectors (the same as giving the flags without an action).
    Train(TrainArgs),
    /// The words nearest to WORD by cosine similarity.
    Similar(SimilarArgs),
    /// Words D completing "A is to B as C is to D": nearest to B − A + C (man king woman → queen).
    Analogy(AnalogyArgs),
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// UTF-8 text files (paragraphs, separated by blank lines, are the sentences).
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Where to write the vectors (word2vec text format).
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Dimensions of each vector.
    #[arg(long, default_value_t = 100)]
    dim: usize,
    /// Largest context reach on each side (each word draws its own in 1..=window).
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Drop words occurring fewer times.
    #[arg(long, default_value_t = 5)]
    min_count: u64,
    /// Negative samples per (context, word) pair.
    #[arg(long, default_value_t = 5)]
    negative: usize,
    /// Subsampling threshold for frequent words (0: off).
    #[arg(long, default_value_t = 1e-3)]
    sample: f64,
    /// Passes over the data.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Starting learning rate (falls linearly to lr·1e-4).
    #[arg(long, default_value_t = 0.025)]
    lr: f32,
    /// Random seed (with --threads 1 the same seed gives the same vectors).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
pub struct SimilarArgs {
    /// The word to look up (tried as given, then lowercased).
    word: String,
    /// Vectors in word2vec text format.
    #[arg(long)]
    vectors: PathBuf,
    /// How many words.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// One JSON object per line: {"rank", "word", "score"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct AnalogyArgs {
    a: String,
    b: String,
    c: String,
    /// Vectors in word2vec text format.
    #[arg(long)]
    vectors: PathBuf,
    /// How many words.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// One JSON object per line: {"rank", "word", "score"}.
    #[arg(long)]
    json: bool,
}

/// Run `tessera word2vec`; `threads` is the global `--threads` (default: all cores).
pub fn run(a: Word2vecArgs, threads: Option<usize>) -> Result<()> {
    match a.action {
        None => run_train(a.train, threads),
        Some(Action::Train(t)) => run_train(t, threads),
        Some(Action::Similar(s)) => {
            let v = load(&s.vectors)?;
            print_neighbours(&v.similar(&s.word, s.k)?, s.json)
        }
        Some(Action::Analogy(s)) => {
            let v = load(&s.vectors)?;
            print_neighbours(&v.analogy(&s.a, &s.b, &s.c, s.k)?, s.json)
        }
    }
}

fn load(path: &std::path::Path) -> Result<WordVectors> {
    Ok(WordVectors::load(path)?)
}

fn print_neighbours(ns: &[Neighbour], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let width = ns.iter().map(|n| n.word.chars().count()).max().unwrap_or(0);
    for (i, n) in ns.iter().enumerate() {
        if json {
            let line = serde_json::json!({"rank": i + 1, "word": n.word, "score": n.score});
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{:>3}  {:<width$}  {:.4}", i + 1, n.word, n.score)?;
        }
    }
    Ok(())
}

fn run_train(a: TrainArgs, threads: Option<usize>) -> Result<()> {
    let Some(out) = a.out else {
        bail!("--out is required");
    };
    if out.is_dir() {
        bail!("--out {} is a directory; name a file", out.display());
    }
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    let opts = Options {
        dim: a.dim,
        window: a.window,
        min_count: a.min_count,
        negative: a.negative,
        sample: a.sample,
        epochs: a.epochs,
        lr: a.lr,
        seed: a.seed,
        threads,
    };
    opts.check()?;
    let t0 = std::time::Instant::now();
    let corpus = Corpus::from_files(&a.data, a.min_count)?;
    eprintln!(
        "read {} words in {} sentences ({:.1} s); vocabulary {} words with at least {} occurrences",
        corpus.ids.len(),
        corpus.sentences(),
        t0.elapsed().as_secs_f64(),
        corpus.vocab.len(),
        opts.min_count.max(1),
    );

    let stop = crate::interrupt_flag();
    let bar = ProgressBar::new(1000 * opts.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    let mut ticks = 0usize;
    let mut on_event = |e: Event<'_>| match e {
        Event::Start { threads, .. } => say(
            &bar,
            format!(
                "skip-gram, negative sampling: {} dimensions, window {}, {} negatives, sample {}, \
                 {} epochs, lr {}, {threads} threads",
                opts.dim, opts.window, opts.negative, opts.sample, opts.epochs, opts.lr
            ),
        ),
        Event::Progress {
            epoch,
            epochs,
            fraction,
            words_per_s,
            lr,
            loss,
        } => {
            bar.set_position(((epoch - 1) as f64 * 1000.0 + fraction.min(1.0) * 1000.0) as u64);
            let msg = format!(
                "epoch {epoch}/{epochs} {:>3.0}% | loss {loss:.4} | lr {lr:.5} | {:.0} words/s",
                fraction * 100.0,
                words_per_s
            );
            bar.set_message(msg.clone());
            // Without a terminal, a plain line about every 5 s.
            ticks += 1;
            if bar.is_hidden() && ticks == 10 {
                ticks = 0;
                eprintln!("{msg}");
            }
        }
        Event::Epoch(r) => {
            bar.set_position(r.epoch as u64 * 1000);
            say(
                &bar,
                format!(
                    "epoch {}/{}: loss {:.4} (fixed sample; {:.4} while training) | {} words in \
                     {:.1} s, {:.0} words/s | lr {:.5}",
                    r.epoch,
                    opts.epochs,
                    r.probe_loss,
                    r.loss,
                    r.words,
                    r.seconds,
                    r.words_per_s,
                    r.lr
                ),
            )
        }
    };
    let result = train(&corpus, &opts, Some(&stop), &mut on_event);
    bar.finish_and_clear();
    let (vectors, reports) = result?;
    vectors
        .save(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    let secs: f64 = reports.iter().map(|r| r.seconds).sum();
    let words: u64 = reports.iter().map(|r| r.words).sum();
    eprintln!(
        "wrote {} vectors of {} dimensions to {} (training {:.1} s, {:.0} words/s)",
        vectors.len(),
        vectors.dim(),
        out.display(),
        secs,
        words as f64 / secs.max(1e-9)
    );
    let epochs: Vec<_> = reports
        .iter()
        .map(|r| serde_json::json!({"epoch": r.epoch, "loss": r.probe_loss, "running_loss": r.loss, "words_per_s": r.words_per_s}))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "vocab": vectors.len(), "dim": vectors.dim(), "words": corpus.ids.len(),
            "seconds": secs, "words_per_s": words as f64 / secs.max(1e-9), "epochs": epochs,
            "out": out.display().to_string(),
        })
    );
    Ok(())
}
