//! Word embeddings: word2vec's skip-gram with negative sampling (SGNS), in plain Rust.
//!
//! - [`corpus`]: tokenization (lowercase; words are runs of letters, digits and apostrophes),
//!   the vocabulary (`min_count`), frequent-word subsampling and the unigram^0.75 table.
//! - [`sgns`]: the training loop (dynamic window, linearly decaying learning rate, Hogwild!
//!   threads; deterministic with one thread).
//! - `objective`: the dot product, σ and −ln σ by table, the fixed sample of pairs whose loss
//!   is reported after each epoch.
//! - [`vectors`]: the word2vec text format (`N D` header, then `word v1 ... vD`), nearest
//!   words by cosine and analogies.
//!
//! ```no_run
//! use tessera_word2vec::{train, Corpus, Options};
//! let corpus = Corpus::from_files(&["austen.txt"], 5)?;
//! let (vectors, epochs) = train(&corpus, &Options::default(), None, &mut |_| {})?;
//! println!("loss {:.3} → {:.3}", epochs[0].probe_loss, epochs.last().unwrap().probe_loss);
//! for n in vectors.similar("man", 10)? {
//!     println!("{} {:.3}", n.word, n.score);
//! }
//! vectors.save("vectors.txt".as_ref())?;
//! # Ok::<(), tessera::Error>(())
//! ```

// Every `unsafe` block states why it is sound (clippy checks it in CI, with `-D warnings`).
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod corpus;
mod hogwild;
mod objective;
pub mod sgns;
pub mod vectors;

pub use corpus::{tokenize, Corpus, NegativeTable, Vocab};
pub use sgns::train;
pub use vectors::{Neighbour, WordVectors};

use tessera::{Error, Result};

/// Training settings; the defaults are word2vec's (`-cbow 0 -size 100 -window 5 -negative 5
/// -sample 1e-3 -alpha 0.025 -min-count 5 -iter 5`).
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Dimensions of each vector.
    pub dim: usize,
    /// Largest number of words on each side of a word that count as its context; each word
    /// draws its own reach uniformly in `1..=window`.
    pub window: usize,
    /// Words occurring fewer times are dropped (before windows are taken).
    pub min_count: u64,
    /// Negative samples per (context, word) pair.
    pub negative: usize,
    /// Subsampling threshold: words more frequent than this share of the corpus are randomly
    /// skipped; 0 turns subsampling off.
    pub sample: f64,
    /// Passes over the corpus.
    pub epochs: usize,
    /// Starting learning rate; it falls linearly to `lr · 1e-4` over all epochs.
    pub lr: f32,
    /// Seed of the initial vectors, subsampling, windows and negatives.
    pub seed: u64,
    /// Worker threads. One gives the same vectors for the same seed; more share the vectors
    /// without locks and are not bit-reproducible.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dim: 100,
            window: 5,
            min_count: 5,
            negative: 5,
            sample: 1e-3,
            epochs: 5,
            lr: 0.025,
            seed: 0,
            threads: 1,
        }
    }
}

impl Options {
    /// Reject settings that cannot train.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.dim == 0 {
            return bad("dim must be at least 1".into());
        }
        if self.dim > 100_000 {
            return bad(format!("dim {} is too large (at most 100000)", self.dim));
        }
        if self.window == 0 {
            return bad("window must be at least 1".into());
        }
        if self.negative == 0 {
            return bad("negative must be at least 1 (negative sampling is the objective)".into());
        }
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(self.sample.is_finite() && self.sample >= 0.0) {
            return bad(format!(
                "sample must be 0 (off) or a positive threshold, got {}",
                self.sample
            ));
        }
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        Ok(())
    }
}

/// One finished epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean SGNS loss per (context, word) pair, `−ln σ(u_w·v_c) − Σ_k ln σ(−u_k·v_c)`, of a
    /// fixed sample of 20,000 training pairs (with fixed negatives) under the weights at the
    /// end of the epoch: comparable from epoch to epoch.
    pub probe_loss: f64,
    /// The same loss averaged over the epoch's pairs as they were trained (each before its
    /// update). It also reflects the learning rate, so it can rise a little in late epochs.
    pub loss: f64,
    /// (context, word) pairs trained.
    pub pairs: u64,
    /// Corpus words read (before subsampling).
    pub words: u64,
    pub seconds: f64,
    /// `words / seconds`.
    pub words_per_s: f64,
    /// The learning rate when the epoch ended.
    pub lr: f32,
}

/// What [`train`] reports while it runs (always from the calling thread).
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// Before the first epoch.
    Start {
        /// Words in the vocabulary.
        vocab: usize,
        /// Corpus words per epoch (in the vocabulary, before subsampling).
        words: u64,
        sentences: usize,
        threads: usize,
    },
    /// About twice a second during an epoch.
    Progress {
        epoch: usize,
        epochs: usize,
        /// Share of this epoch's words read so far.
        fraction: f64,
        words_per_s: f64,
        lr: f32,
        /// Mean pair loss so far in this epoch.
        loss: f64,
    },
    /// An epoch ended.
    Epoch(&'a EpochReport),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny corpus with two clear groups of interchangeable words.
    fn toy() -> Corpus {
        let mut rng = tessera::util::rng::Rng::new(5);
        let groups = [["cat", "dog", "cow"], ["red", "blue", "green"]];
        let frames = [["the", "small", "ran"], ["a", "bright", "colour"]];
        let mut text = String::new();
        for _ in 0..3000 {
            let g = rng.below(2);
            let f = &frames[g];
            let w = groups[g][rng.below(3)];
            text.push_str(&format!("{} {} {w} {}\n\n", f[0], f[1], f[2]));
        }
        Corpus::from_texts(&[&text], 1).unwrap()
    }

    fn opts(threads: usize) -> Options {
        Options {
            dim: 16,
            window: 2,
            epochs: 3,
            sample: 0.0,
            threads,
            seed: 42,
            ..Options::default()
        }
    }

    #[test]
    fn one_thread_is_deterministic() {
        let c = toy();
        let (a, ra) = train(&c, &opts(1), None, &mut |_| {}).unwrap();
        let (b, rb) = train(&c, &opts(1), None, &mut |_| {}).unwrap();
        assert_eq!(a.to_text(), b.to_text());
        assert_eq!(ra[2].loss, rb[2].loss);
        assert_eq!(ra[2].probe_loss, rb[2].probe_loss);
        let other = Options {
            seed: 43,
            ..opts(1)
        };
        let (c2, _) = train(&c, &other, None, &mut |_| {}).unwrap();
        assert_ne!(a.to_text(), c2.to_text());
    }

    #[test]
    fn learns_the_toy_groups_and_the_loss_falls() {
        let c = toy();
        for threads in [1, 2] {
            let mut events = 0;
            let (v, r) = train(&c, &opts(threads), None, &mut |e| {
                if matches!(e, Event::Epoch(_)) {
                    events += 1
                }
            })
            .unwrap();
            assert_eq!(events, 3);
            assert!(r[0].loss > r[2].loss, "{r:?}");
            // The toy converges within the first epoch, after which the probe loss only wobbles
            // (with 2 Hogwild threads it is not monotone); it must stay far below the untrained
            // loss, (1 + negative) ln 2. The per-epoch fall is checked on Shakespeare
            // (tests/word2vec.rs).
            let untrained = (1 + opts(threads).negative) as f64 * std::f64::consts::LN_2;
            assert!(r.iter().all(|e| e.probe_loss < 0.5 * untrained), "{r:?}");
            assert!(r.iter().all(|r| r.words == c.vocab.total()));
            let near: Vec<String> = v
                .similar("cat", 2)
                .unwrap()
                .into_iter()
                .map(|n| n.word)
                .collect();
            assert!(
                near.contains(&"dog".into()) && near.contains(&"cow".into()),
                "{near:?}"
            );
        }
    }

    #[test]
    fn bad_options_and_interruption() {
        let c = toy();
        let with = |f: fn(&mut Options)| {
            let mut o = opts(1);
            f(&mut o);
            o
        };
        for (o, want) in [
            (with(|o| o.dim = 0), "dim must be at least 1"),
            (with(|o| o.window = 0), "window"),
            (with(|o| o.negative = 0), "negative"),
            (with(|o| o.epochs = 0), "epochs"),
            (with(|o| o.lr = f32::NAN), "lr"),
            (with(|o| o.sample = -1.0), "sample"),
            (with(|o| o.threads = 0), "threads"),
        ] {
            let e = train(&c, &o, None, &mut |_| {}).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let stop = std::sync::atomic::AtomicBool::new(true);
        let e = train(&c, &opts(2), Some(&stop), &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e}");
    }
}
