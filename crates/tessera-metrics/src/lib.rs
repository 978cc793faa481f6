//! Text and task metrics whose numbers equal the reference tools:
//!
//! - [`bleu`] and [`chrf`]: sacreBLEU 2.x (corpus and sentence BLEU, chrF, chrF++, signatures);
//! - [`rouge`]: rouge-score 0.1.2 (ROUGE-N, ROUGE-L, ROUGE-Lsum, stemming, multi-reference),
//!   with [`rouge_bootstrap`] for its seeded `BootstrapAggregator`;
//! - [`meteor`]: NLTK 3.10 METEOR over [`porter`] (NLTK's Porter stemmer) and [`wordnet`]
//!   (a reader of the WordNet 3.0 dictionary files with NLTK's `morphy`);
//! - [`classify`]: accuracy, per-class / micro / macro / weighted precision, recall and F1,
//!   confusion matrix (scikit-learn's definitions); [`seqeval`]: entity-level scores for
//!   BIO/IOB2/IOBES tags with seqeval's rules; [`perplexity`]: perplexity and bits per character;
//! - [`input`]: reading line-aligned files with clear errors, and [`commands`]: the logic behind
//!   `tessera eval bleu|chrf|rouge|meteor|classify|ner`.
//!
//! No tensor dependencies. Errors are [`MetricsError`]; nothing a user feeds in panics.

#![forbid(unsafe_code)]

pub mod bleu;
pub mod chrf;
pub mod classify;
pub mod commands;
pub mod error;
pub mod input;
pub mod meteor;
pub mod mt19937;
pub mod ngram;
pub mod parallel;
pub mod perplexity;
pub mod porter;
pub mod report;
pub mod rouge;
pub mod rouge_bootstrap;
pub mod seqeval;
pub mod text;
pub mod word_tokenize;
pub mod wordnet;

pub use error::{MetricsError, Result};
