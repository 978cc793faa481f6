//! `tessera eval bleu|chrf|rouge|meteor|classify|ner`: argument parsing and printing only; the
//! reading, scoring and formatting live in `tessera_metrics::commands`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use tessera_metrics::commands::{self, MeteorTokenize, Output};

/// Text-metric subcommands of `tessera eval`.
#[derive(Subcommand, Debug)]
pub enum MetricsCommand {
    /// Corpus BLEU as sacreBLEU 2.x computes it.
    Bleu(BleuArgs),
    /// chrF / chrF++ as sacreBLEU 2.x computes it.
    Chrf(ChrfArgs),
    /// ROUGE-N / ROUGE-L / ROUGE-Lsum as rouge-score computes it.
    Rouge(RougeArgs),
    /// METEOR as NLTK computes it (needs WordNet 3.0).
    Meteor(MeteorArgs),
    /// Accuracy, precision, recall, F1 and confusion matrix of label files.
    Classify(ClassifyArgs),
    /// Entity-level precision, recall and F1 of CoNLL tag files (seqeval rules).
    Ner(NerArgs),
}

/// Files and output options shared by the segment metrics.
#[derive(Args, Debug)]
pub struct SegmentFiles {
    /// Hypotheses, one segment per line.
    #[arg(long)]
    pub hyp: PathBuf,
    /// References, one segment per line; repeat for several reference streams (an empty line
    /// means that segment has no reference in that stream).
    #[arg(long = "ref", required = true)]
    pub refs: Vec<PathBuf>,
    /// Print JSON instead of plain text.
    #[arg(long)]
    pub json: bool,
    /// Add per-segment scores.
    #[arg(long)]
    pub segments: bool,
    /// Worker threads (1 = single-threaded, 0 = all cores).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Arguments of `tessera eval bleu`.
#[derive(Args, Debug)]
pub struct BleuArgs {
    #[command(flatten)]
    pub files: SegmentFiles,
    /// Tokenizer: 13a, intl, zh, char, none.
    #[arg(long, default_value = "13a")]
    pub tokenize: String,
    /// Smoothing: exp, floor, add-k, none.
    #[arg(long, default_value = "exp")]
    pub smooth: String,
    /// Smoothing value for floor (default 0.1) and add-k (default 1).
    #[arg(long)]
    pub smooth_value: Option<f64>,
    /// Case-insensitive BLEU.
    #[arg(long)]
    pub lowercase: bool,
    /// Use the effective n-gram order for the corpus score.
    #[arg(long)]
    pub effective_order: bool,
}

/// Arguments of `tessera eval chrf`.
#[derive(Args, Debug)]
pub struct ChrfArgs {
    #[command(flatten)]
    pub files: SegmentFiles,
    /// Word n-gram order (2 gives chrF++).
    #[arg(long, default_value_t = 0)]
    pub word_order: usize,
    /// Character n-gram order.
    #[arg(long, default_value_t = 6)]
    pub char_order: usize,
    /// Recall weight beta.
    #[arg(long, default_value_t = 2)]
    pub beta: u32,
    /// Case-insensitive chrF.
    #[arg(long)]
    pub lowercase: bool,
    /// Keep whitespace in character n-grams.
    #[arg(long)]
    pub whitespace: bool,
}

/// Arguments of `tessera eval rouge`.
#[derive(Args, Debug)]
pub struct RougeArgs {
    #[command(flatten)]
    pub files: SegmentFiles,
    /// ROUGE types, comma-separated (rouge1, rouge2, …, rougeL, rougeLsum).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rouge1,rouge2,rougeL,rougeLsum"
    )]
    pub types: Vec<String>,
    /// Porter-stem tokens longer than 3 characters.
    #[arg(long)]
    pub stemmer: bool,
    /// Read the two characters `\n` inside a line as a sentence break (for rougeLsum).
    #[arg(long)]
    pub newline_escape: bool,
    /// Report rouge-score's BootstrapAggregator intervals instead of the plain mean.
    #[arg(long)]
    pub bootstrap: bool,
    /// Seed of the bootstrap (as `np.random.seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
}

/// How METEOR splits lines into words.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum MeteorTokenizeArg {
    /// On whitespace (NLTK's function takes pre-tokenized input).
    Whitespace,
    /// NLTK's word_tokenize (Treebank rules), as Hugging Face `evaluate` does.
    Word,
}

/// Arguments of `tessera eval meteor`.
#[derive(Args, Debug)]
pub struct MeteorArgs {
    #[command(flatten)]
    pub files: SegmentFiles,
    /// Tokenization of hypotheses and references.
    #[arg(long, value_enum, default_value = "whitespace")]
    pub tokenize: MeteorTokenizeArg,
    /// WordNet 3.0 dictionary folder (default: $TESSERA_WORDNET, else /usr/share/wordnet).
    #[arg(long)]
    pub wordnet: Option<PathBuf>,
}

/// Arguments of `tessera eval classify`.
#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Predicted labels, one per line.
    #[arg(long)]
    pub pred: PathBuf,
    /// Gold labels, one per line.
    #[arg(long)]
    pub gold: PathBuf,
    /// Print JSON instead of plain text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tessera eval ner`.
#[derive(Args, Debug)]
pub struct NerArgs {
    /// Predicted tags, CoNLL style (`token<TAB>tag`, blank line between sentences).
    #[arg(long)]
    pub pred: PathBuf,
    /// Gold tags, same layout, same sentences and tokens.
    #[arg(long)]
    pub gold: PathBuf,
    /// Print JSON instead of plain text.
    #[arg(long)]
    pub json: bool,
}

fn print(out: &Output, json: bool) {
    println!("{}", out.render(json));
}

/// Runs one metrics subcommand and prints its result.
pub fn run(cmd: MetricsCommand) -> anyhow::Result<()> {
    match cmd {
        MetricsCommand::Bleu(a) => {
            let out = commands::bleu(&commands::BleuOptions {
                hyp: a.files.hyp,
                refs: a.files.refs,
                tokenize: a.tokenize,
                smooth: a.smooth,
                smooth_value: a.smooth_value,
                lowercase: a.lowercase,
                effective_order: a.effective_order,
                segments: a.files.segments,
                threads: a.files.threads,
            })?;
            print(&out, a.files.json);
        }
        MetricsCommand::Chrf(a) => {
            let out = commands::chrf(&commands::ChrfOptions {
                hyp: a.files.hyp,
                refs: a.files.refs,
                char_order: a.char_order,
                word_order: a.word_order,
                beta: a.beta,
                lowercase: a.lowercase,
                whitespace: a.whitespace,
                segments: a.files.segments,
                threads: a.files.threads,
            })?;
            print(&out, a.files.json);
        }
        MetricsCommand::Rouge(a) => {
            let out = commands::rouge(&commands::RougeOptions {
                hyp: a.files.hyp,
                refs: a.files.refs,
                types: a.types,
                stemmer: a.stemmer,
                newline_escape: a.newline_escape,
                bootstrap: a.bootstrap.then_some(a.seed),
                segments: a.files.segments,
                threads: a.files.threads,
            })?;
            print(&out, a.files.json);
        }
        MetricsCommand::Meteor(a) => {
            let out = commands::meteor(&commands::MeteorOptions {
                hyp: a.files.hyp,
                refs: a.files.refs,
                tokenize: match a.tokenize {
                    MeteorTokenizeArg::Whitespace => MeteorTokenize::Whitespace,
                    MeteorTokenizeArg::Word => MeteorTokenize::Word,
                },
                wordnet: a.wordnet,
                segments: a.files.segments,
                threads: a.files.threads,
            })?;
            print(&out, a.files.json);
        }
        MetricsCommand::Classify(a) => print(&commands::classify(&a.pred, &a.gold)?, a.json),
        MetricsCommand::Ner(a) => print(&commands::ner(&a.pred, &a.gold)?, a.json),
    }
    Ok(())
}
