//! Skip-gram with negative sampling: the training loop.
//!
//! For each kept word `w` of a sentence and each context word `c` within a window of random
//! size `1..=window` around it, the input vector `v_c` learns to predict `w` against `negative`
//! words drawn from the unigram^0.75 table:
//!
//! ```text
//! loss(c, w) = −ln σ(u_w · v_c) − Σ_k ln σ(−u_k · v_c)        (u: output vectors, v: input)
//! ```
//!
//! with plain SGD at a rate falling linearly from `lr` to `lr · 1e-4` over all epochs. Threads
//! share both matrices and update them without locks (Hogwild!, as word2vec and gensim do), through
//! relaxed atomics (see [`hogwild`](super::hogwild)): no data race in Rust's sense.

use super::corpus::{keep_probabilities, Corpus, NegativeTable};
use super::hogwild::{Kernels, SharedMatrix};
use super::objective::{Probe, SigmoidTable};
use super::vectors::WordVectors;
use super::{EpochReport, Event, Options};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tessera::util::rng::Rng;
use tessera::{Error, Result};

/// Words a thread reads between updates of the shared counters (and the learning rate).
const SYNC_WORDS: u64 = 10_000;
/// The learning rate never falls below `lr · MIN_LR_FRACTION` (word2vec's floor).
const MIN_LR_FRACTION: f32 = 1e-4;

/// The two parameter matrices.
struct Shared {
    /// Input vectors `v` (the word vectors kept at the end).
    syn0: SharedMatrix,
    /// Output vectors `u`.
    syn1: SharedMatrix,
}

/// What one thread reports back to the main thread.
#[derive(Default)]
struct Counters {
    /// Corpus words read in this epoch (before subsampling).
    words: AtomicU64,
    /// Sum of pair losses (f64 bits) and number of (context, word) pairs in this epoch.
    loss_bits: AtomicU64,
    pairs: AtomicU64,
}

/// Everything a worker reads.
struct Job<'a> {
    corpus: &'a Corpus,
    sentences: std::ops::Range<usize>,
    keep: &'a [f32],
    table: &'a NegativeTable,
    sigmoid: &'a SigmoidTable,
    opts: &'a Options,
    shared: &'a Shared,
    /// Words read by all threads over all epochs so far (drives the learning rate).
    global_words: &'a AtomicU64,
    total_words: u64,
    stop: Option<&'a AtomicBool>,
    stopped: &'a AtomicBool,
    lr_bits: &'a AtomicU64,
    counters: &'a Counters,
}

/// Train vectors on `corpus` (see the module docs); `on_event` sees progress from this thread.
pub fn train(
    corpus: &Corpus,
    opts: &Options,
    stop: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(WordVectors, Vec<EpochReport>)> {
    opts.check()?;
    if !(0..corpus.sentences()).any(|i| corpus.sentence(i).len() >= 2) {
        return Err(Error::Input(
            "no sentence has two words in the vocabulary: there are no (context, word) pairs \
             to train on"
                .into(),
        ));
    }
    let v = corpus.vocab.len();
    let d = opts.dim;
    // word2vec's initialisation: inputs uniform in [−0.5/d, 0.5/d), outputs zero.
    let mut rng = Rng::new(opts.seed);
    let shared = Shared {
        syn0: SharedMatrix::new(v, d, || (rng.uniform_f32() - 0.5) / d as f32)?,
        syn1: SharedMatrix::new(v, d, || 0.0)?,
    };

    let keep = keep_probabilities(&corpus.vocab, opts.sample);
    let table = NegativeTable::new(corpus.vocab.counts(), 0.75);
    let sigmoid = SigmoidTable::new();
    let total_words = corpus.vocab.total();
    let threads = opts.threads.clamp(1, corpus.sentences().max(1));
    let ranges = split_sentences(corpus, threads);
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    let probe = Probe::draw(corpus, &keep, &table, opts, &mut rng.fork());
    on_event(Event::Start {
        vocab: v,
        words: total_words,
        sentences: corpus.sentences(),
        threads,
    });

    let global_words = AtomicU64::new(0);
    let stopped = AtomicBool::new(false);
    let lr_bits = AtomicU64::new((opts.lr as f64).to_bits());
    let mut reports = Vec::with_capacity(opts.epochs);
    for epoch in 1..=opts.epochs {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(Error::Interrupted);
        }
        let counters: Vec<Counters> = (0..threads).map(|_| Counters::default()).collect();
        let t0 = Instant::now();
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for ((range, rng), c) in ranges.iter().zip(rngs.iter_mut()).zip(&counters) {
                let job = Job {
                    corpus,
                    sentences: range.clone(),
                    keep: &keep,
                    table: &table,
                    sigmoid: &sigmoid,
                    opts,
                    shared: &shared,
                    global_words: &global_words,
                    total_words,
                    stop,
                    stopped: &stopped,
                    lr_bits: &lr_bits,
                    counters: c,
                };
                let done = Done(&done);
                s.spawn(move || {
                    // The generator lives on this thread's stack while it runs: the threads'
                    // generators sit side by side in `rngs`, and the worker writes its state
                    // back to memory often (around each row kernel), so sharing a cache line
                    // would bounce it between the cores at every draw.
                    let mut local = rng.clone();
                    run_worker(&job, &mut local);
                    *rng = local;
                    drop(done);
                });
            }
            // Progress from this thread while the workers run.
            let mut last = Instant::now();
            while done.load(Ordering::Acquire) < threads {
                std::thread::sleep(Duration::from_millis(20));
                if last.elapsed() >= Duration::from_millis(500) {
                    last = Instant::now();
                    let (words, loss, pairs) = sum(&counters);
                    on_event(Event::Progress {
                        epoch,
                        epochs: opts.epochs,
                        fraction: words as f64 / total_words.max(1) as f64,
                        words_per_s: words as f64 / t0.elapsed().as_secs_f64(),
                        lr: f64::from_bits(lr_bits.load(Ordering::Relaxed)) as f32,
                        loss: loss / pairs.max(1) as f64,
                    });
                }
            }
        });
        if stopped.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let secs = t0.elapsed().as_secs_f64();
        let (words, loss, pairs) = sum(&counters);
        let (s0, s1) = (shared.syn0.to_vec(), shared.syn1.to_vec());
        reports.push(EpochReport {
            epoch,
            probe_loss: probe.loss(&s0, &s1, d, &sigmoid),
            loss: loss / pairs.max(1) as f64,
            pairs,
            words,
            seconds: secs,
            words_per_s: words as f64 / secs.max(1e-9),
            lr: f64::from_bits(lr_bits.load(Ordering::Relaxed)) as f32,
        });
        on_event(Event::Epoch(reports.last().expect("just pushed")));
    }
    let vectors = WordVectors::new(corpus.vocab.words().to_vec(), d, shared.syn0.to_vec())?;
    Ok((vectors, reports))
}

/// Counts a finished worker, also when it panics (the panic then surfaces from the scope).
struct Done<'a>(&'a AtomicUsize);
impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

fn sum(counters: &[Counters]) -> (u64, f64, u64) {
    counters.iter().fold((0, 0.0, 0), |(w, l, p), c| {
        (
            w + c.words.load(Ordering::Relaxed),
            l + f64::from_bits(c.loss_bits.load(Ordering::Relaxed)),
            p + c.pairs.load(Ordering::Relaxed),
        )
    })
}

/// Contiguous sentence ranges holding about the same number of words each.
fn split_sentences(corpus: &Corpus, parts: usize) -> Vec<std::ops::Range<usize>> {
    let total = corpus.ids.len();
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 1..=parts {
        let target = total * p / parts;
        let mut end = start;
        while end < corpus.sentences() && (corpus.starts[end] < target || p == parts) {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

fn run_worker(job: &Job<'_>, rng: &mut Rng) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `worker_avx2` enables only AVX2, which the CPU has (checked just above).
        unsafe { worker_avx2(job, rng) };
        return;
    }
    worker(job, rng);
}

/// The same loop compiled for AVX2; the arithmetic is identical (16 independent partial sums,
/// no fused multiply-add), so results do not depend on which version runs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn worker_avx2(job: &Job<'_>, rng: &mut Rng) {
    worker(job, rng)
}

/// One thread's share of one epoch.
#[inline(always)]
fn worker(job: &Job<'_>, rng: &mut Rng) {
    let opts = job.opts;
    let d = opts.dim;
    let start_lr = opts.lr;
    let mut lr = f64::from_bits(job.lr_bits.load(Ordering::Relaxed)) as f32;
    let mut sentence: Vec<u32> = Vec::with_capacity(super::corpus::MAX_SENTENCE_WORDS);
    let kernels = Kernels::detect();
    let mut neu1e = vec![0.0f32; d];
    let (mut words, mut unsynced, mut loss, mut pairs) = (0u64, 0u64, 0f64, 0u64);
    let budget = (job.total_words * opts.epochs as u64 + 1) as f64;
    let publish = |words: u64, loss: f64, pairs: u64| {
        let c = job.counters;
        c.words.store(words, Ordering::Relaxed);
        c.loss_bits.store(loss.to_bits(), Ordering::Relaxed);
        c.pairs.store(pairs, Ordering::Relaxed);
    };
    for si in job.sentences.clone() {
        if unsynced >= SYNC_WORDS {
            let seen = job.global_words.fetch_add(unsynced, Ordering::Relaxed) + unsynced;
            unsynced = 0;
            lr = (start_lr * (1.0 - (seen as f64 / budget) as f32)).max(start_lr * MIN_LR_FRACTION);
            job.lr_bits.store((lr as f64).to_bits(), Ordering::Relaxed);
            publish(words, loss, pairs);
            if job.stop.is_some_and(|s| s.load(Ordering::Relaxed))
                || job.stopped.load(Ordering::Relaxed)
            {
                job.stopped.store(true, Ordering::Relaxed);
                return;
            }
        }
        // Frequent-word subsampling, drawn afresh each epoch.
        let raw = job.corpus.sentence(si);
        words += raw.len() as u64;
        unsynced += raw.len() as u64;
        sentence.clear();
        for &w in raw {
            let p = job.keep[w as usize];
            if p >= 1.0 || p > rng.uniform_f32() {
                sentence.push(w);
            }
        }
        let len = sentence.len();
        for pos in 0..len {
            let word = sentence[pos];
            // Dynamic window: 1..=window words on each side, shorter ones more often.
            let reach = opts.window - rng.below(opts.window);
            let lo = pos.saturating_sub(reach);
            let hi = (pos + reach).min(len - 1);
            for (c, &ctx) in sentence.iter().enumerate().take(hi + 1).skip(lo) {
                if c == pos {
                    continue;
                }
                let l1 = job.shared.syn0.row(ctx as usize);
                neu1e.iter_mut().for_each(|x| *x = 0.0);
                let mut pair_loss = 0.0f32;
                for k in 0..=opts.negative {
                    let (target, label) = if k == 0 {
                        (word, true)
                    } else {
                        let t = job.table.sample(rng);
                        if t == word {
                            continue;
                        }
                        (t, false)
                    };
                    let l2 = job.shared.syn1.row(target as usize);
                    let f = kernels.dot(l1, l2);
                    let (g, l) = job.sigmoid.gradient(f, label);
                    pair_loss += l;
                    let g = g * lr;
                    // neu1e += g · u; u += g · v.
                    kernels.update(&mut neu1e, l2, l1, g);
                }
                kernels.add(l1, &neu1e);
                loss += pair_loss as f64;
                pairs += 1;
            }
        }
    }
    job.global_words.fetch_add(unsynced, Ordering::Relaxed);
    publish(words, loss, pairs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_evenly() {
        let text = (0..40)
            .map(|i| format!("w{} w{}\n\n", i % 3, i % 5))
            .collect::<String>();
        let c = Corpus::from_texts(&[&text], 1).unwrap();
        let r = split_sentences(&c, 3);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].start, 0);
        assert_eq!(r[2].end, c.sentences());
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
        assert!(r.iter().all(|r| r.len() >= 12), "{r:?}");
    }
}
