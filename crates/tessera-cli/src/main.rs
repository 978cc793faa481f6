//! `tessera`: train, evaluate and run Transformer language models.

#![forbid(unsafe_code)]

/// Large zero-filled buffers straight from the kernel (see `ZeroMapAlloc`).
#[global_allocator]
static ALLOC: tessera::util::process::ZeroMapAlloc = tessera::util::process::ZeroMapAlloc;

mod cmd_bench;
mod cmd_bench_embed;
mod cmd_bench_finetune;
mod cmd_chat;
mod cmd_embed;
mod cmd_eval;
mod cmd_export;
mod cmd_finetune;
mod cmd_generate;
mod cmd_hub;
mod cmd_info;
mod cmd_seq2seq;
mod cmd_serve;
mod cmd_sft;
mod cmd_summarize;
mod cmd_tokenize;
mod cmd_tokenizer;
mod cmd_train;
mod cmd_word2vec;
mod eval_metrics;
mod plot;
mod progress;
mod runtime;

use clap::{Parser, Subcommand};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version,
    about = "Train, evaluate and run Transformer language models"
)]
struct Cli {
    /// Worker threads for tensor math (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Tokenizer tools.
    #[command(subcommand)]
    Tokenizer(cmd_tokenizer::TokenizerCmd),
    /// Chat with a model in the terminal (default: SmolLM2-135M-Instruct, fetched on first use).
    Chat(cmd_chat::ChatArgs),
    /// Train from scratch: a language model on text, or a translation model on sentence pairs
    /// (`--task translation`).
    Train(cmd_train::TrainArgs),
    /// Translate lines (standard input or --input) with an encoder-decoder, one line out per line
    /// in: greedy or beam search.
    Translate(cmd_seq2seq::TranslateArgs),
    /// Summarize a document (or one per line): with an encoder-decoder, with an instruct decoder
    /// through its chat template (default SmolLM2-135M-Instruct), or the Lead-N baseline.
    Summarize(cmd_summarize::SummarizeArgs),
    /// Generate text from a prompt, streaming it as it is decoded.
    Generate(cmd_generate::GenerateArgs),
    /// Serve a model over HTTP: the OpenAI API (chat, completions, embeddings), a web chat page,
    /// continuous batching.
    Serve(cmd_serve::ServeArgs),
    /// Write a GGUF model with a LoRA adapter merged into its weights (`--adapter DIR`), or
    /// converted to another tensor type (`--type q8_0`).
    Export(cmd_export::ExportArgs),
    /// Evaluate a model or score text.
    #[command(subcommand)]
    Eval(cmd_eval::EvalCmd),
    /// Benchmarks that print the same final lines as the peers' scripts (`tessera bench --model M`:
    /// prefill and decode speed of a model; subcommands for training, embeddings, kernels).
    Bench(cmd_bench::BenchArgs),
    /// Sentence embeddings of texts (one JSON line, or an .npy row, per input).
    Embed(cmd_embed::EmbedArgs),
    /// Semantic search: the corpus texts closest to a query.
    Similar(cmd_embed::SimilarArgs),
    /// Fine-tune an encoder for text classification or NER.
    #[command(subcommand)]
    Finetune(cmd_finetune::FinetuneCmd),
    /// Classify texts with a fine-tuned model.
    Classify(cmd_finetune::ClassifyArgs),
    /// Tag entities in texts with a fine-tuned NER model.
    Tag(cmd_finetune::TagArgs),
    /// Show what a model file holds (`--system`: the CPU features the kernels can use).
    Info(cmd_info::InfoArgs),
    /// Print the token ids of a text.
    Tokenize(cmd_tokenize::TokenizeArgs),
    /// Render messages through the model's chat template.
    Template(cmd_tokenize::TemplateArgs),
    /// Fetch a known model into the cache.
    Pull(cmd_hub::PullArgs),
    /// List the cached models and the ones `pull` can fetch.
    List(cmd_hub::ListArgs),
    /// Word vectors: train skip-gram with negative sampling (`--data F --out V`), or query them
    /// (`similar WORD`, `analogy A B C`).
    Word2vec(cmd_word2vec::Word2vecArgs),
}

impl Cmd {
    /// Whether the command trains or runs encoders on the tensor engine (see [`runtime`]).
    fn tensor_workload(&self) -> bool {
        match self {
            Cmd::Train(_)
            | Cmd::Translate(_)
            | Cmd::Finetune(_)
            | Cmd::Embed(_)
            | Cmd::Similar(_)
            | Cmd::Classify(_)
            | Cmd::Tag(_) => true,
            Cmd::Bench(b) => b.is_tensor_workload(),
            _ => false,
        }
    }

    /// Whether the command runs as one job across the ranks of `mpirun` / `srun` (data-parallel
    /// training), or reports on them (`info --system`).
    fn distributed(&self) -> bool {
        match self {
            Cmd::Train(_) | Cmd::Finetune(_) | Cmd::Info(_) => true,
            Cmd::Bench(b) => b.is_distributed(),
            _ => false,
        }
    }

    fn name(&self) -> String {
        format!("{self:?}")
            .split(['(', ' '])
            .next()
            .unwrap_or("")
            .to_lowercase()
    }
}

/// Set by Ctrl-C or SIGUSR1: long-running commands stop at the next safe point (training: after
/// the current step, with a checkpoint). A second Ctrl-C exits at once. SIGUSR1 is the graceful
/// stop of a data-parallel job: `mpirun` ends the job at once on Ctrl-C but forwards SIGUSR1 to
/// every rank, and Slurm sends it before a time limit (`--signal=USR1@120`).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let presses = AtomicUsize::new(0);
        let _ = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\ninterrupted again: exiting now");
                std::process::exit(130);
            }
            f.store(true, Ordering::SeqCst);
        });
        let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, flag.clone());
        flag
    })
    .clone()
}

fn main() {
    let cli = Cli::parse();
    // Launched as one rank of several (mpirun, srun)? Then, unless told otherwise, the ranks on
    // this node share its cores: ranks × threads ≤ cores.
    let layout = tessera::dist::Layout::from_env();
    let threads = cli.threads.or_else(|| {
        (layout.size > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none()).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            layout.threads_per_rank(cores, tessera::dist::online_cpus().unwrap_or(cores))
        })
    });
    // Process settings, before any thread exists (no other thread may read the environment
    // while it changes).
    runtime::configure(threads, cli.cmd.tensor_workload());
    // The job's communicator (MPI starts here, after the environment is settled).
    let world = if layout.size > 1 {
        if !cli.cmd.distributed() {
            if layout.rank == 0 {
                eprintln!(
                    "error: `tessera {}` runs as one process; of the commands, `train`, \
                     `finetune` and `bench train` run across the ranks of mpirun/srun",
                    cli.cmd.name()
                );
            }
            std::process::exit(2);
        }
        match tessera::dist::init() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error (rank {} of {}): {e}", layout.rank, layout.size);
                std::process::exit(1);
            }
        }
    } else {
        &tessera::dist::Single
    };
    // Rank 0 alone reports; the others keep their standard error for a failure of their own.
    let mut failure_out: Option<std::fs::File> = None;
    if world.rank() > 0 {
        failure_out = tessera::util::process::silence_output().ok();
    }
    let result = match cli.cmd {
        Cmd::Tokenizer(c) => cmd_tokenizer::run(c),
        Cmd::Chat(a) => cmd_chat::run(a),
        Cmd::Train(a) => cmd_train::run(a),
        Cmd::Translate(a) => cmd_seq2seq::translate(a),
        Cmd::Summarize(a) => cmd_summarize::run(a),
        Cmd::Generate(a) => cmd_generate::run(a),
        Cmd::Serve(a) => cmd_serve::run(a),
        Cmd::Eval(c) => cmd_eval::run(c),
        Cmd::Export(a) => cmd_export::run(a),
        Cmd::Bench(c) => cmd_bench::run(c),
        Cmd::Embed(a) => cmd_embed::run_embed(a),
        Cmd::Similar(a) => cmd_embed::run_similar(a),
        Cmd::Finetune(c) => cmd_finetune::run(c),
        Cmd::Classify(a) => cmd_finetune::run_classify(a),
        Cmd::Tag(a) => cmd_finetune::run_tag(a),
        Cmd::Info(a) => cmd_info::run(a),
        Cmd::Tokenize(a) => cmd_tokenize::run_tokenize(a),
        Cmd::Template(a) => cmd_tokenize::run_template(a),
        Cmd::Pull(a) => cmd_hub::run_pull(a),
        Cmd::List(a) => cmd_hub::run_list(a),
        Cmd::Word2vec(a) => cmd_word2vec::run(a, cli.threads),
    };
    if let Err(e) = result {
        if world.size() > 1 {
            let msg = format!(
                "error (rank {} of {}): {e:#}\nstopping every rank of the job",
                world.rank(),
                world.size()
            );
            match failure_out.as_mut() {
                Some(f) => {
                    use std::io::Write;
                    let _ = writeln!(f, "{msg}");
                }
                None => eprintln!("{msg}"),
            }
            // The others may be waiting in a collective for this rank: end them now.
            tessera::dist::abort(1);
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
    tessera::dist::finalize();
}
