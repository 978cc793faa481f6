//! The SGNS objective's arithmetic: the dot product, σ and −ln σ by table, and the fixed
//! sample of pairs whose loss is reported after each epoch.

use super::corpus::{Corpus, NegativeTable};
use super::Options;
use tessera::util::rng::Rng;

/// Pairs in the fixed sample whose loss is measured after each epoch.
const PROBE_PAIRS: usize = 20_000;

/// A fixed sample of training pairs, each with fixed negatives, drawn as training draws them
/// (subsampled words, dynamic window, unigram^0.75 negatives). Its loss after each epoch
/// compares the model between epochs; the running loss during an epoch also reflects the
/// learning rate (a high rate fits pairs that recur nearby, which a lower one does not).
pub(super) struct Probe {
    /// (pairs, 2 + negative): context, word, negatives.
    rows: Vec<u32>,
    width: usize,
}

impl Probe {
    pub(super) fn draw(
        corpus: &Corpus,
        keep: &[f32],
        table: &NegativeTable,
        opts: &Options,
        rng: &mut Rng,
    ) -> Probe {
        let width = 2 + opts.negative;
        let mut rows = Vec::with_capacity(PROBE_PAIRS * width);
        let kept = |w: u32, rng: &mut Rng| {
            let p = keep[w as usize];
            p >= 1.0 || p > rng.uniform_f32()
        };
        for _ in 0..PROBE_PAIRS * 20 {
            if rows.len() == PROBE_PAIRS * width {
                break;
            }
            let pos = rng.below(corpus.ids.len());
            let s = corpus.starts.partition_point(|&st| st <= pos) - 1;
            let (lo, hi) = (corpus.starts[s], corpus.starts[s + 1]);
            let reach = opts.window - rng.below(opts.window);
            let c = pos as isize + rng.below(2 * reach) as isize - reach as isize;
            let c = if c >= pos as isize { c + 1 } else { c };
            if c < lo as isize || c >= hi as isize {
                continue;
            }
            let (word, ctx) = (corpus.ids[pos], corpus.ids[c as usize]);
            if !kept(word, rng) || !kept(ctx, rng) {
                continue;
            }
            rows.push(ctx);
            rows.push(word);
            rows.extend((0..opts.negative).map(|_| table.sample(rng)));
        }
        Probe { rows, width }
    }

    /// Mean SGNS loss of the pairs under these weights (NaN when the sample is empty).
    pub(super) fn loss(&self, syn0: &[f32], syn1: &[f32], d: usize, sig: &SigmoidTable) -> f64 {
        let mut total = 0.0f64;
        for r in self.rows.chunks_exact(self.width) {
            let v = &syn0[r[0] as usize * d..][..d];
            for (k, &t) in r[1..].iter().enumerate() {
                if k > 0 && t == r[1] {
                    continue;
                }
                let f = dot(v, &syn1[t as usize * d..][..d]);
                total += sig.gradient(f, k == 0).1 as f64;
            }
        }
        total / (self.rows.len() / self.width) as f64
    }
}

/// `(label − σ(f), −ln σ(±f))`: the gradient factor and the loss of one target (`+f` for the
/// true word, `−f` for a negative), from a single `exp`.
#[inline(always)]
fn gradient_exact(f: f32, label: bool) -> (f32, f32) {
    let e = (-f.abs()).exp(); // in (0, 1]
    let sig = if f >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    // softplus(−f) = −ln σ(f), softplus(f) = −ln σ(−f), each as max(·, 0) + ln(1 + e).
    let tail = e.ln_1p();
    if label {
        (1.0 - sig, (-f).max(0.0) + tail)
    } else {
        (-sig, f.max(0.0) + tail)
    }
}

/// σ and −ln σ tabulated on [−RANGE, RANGE] and interpolated linearly (errors below 2e-6,
/// measured in the tests); outside the range, computed exactly. The `exp` and `ln` per target
/// otherwise cost about as much as the vector arithmetic.
pub(super) struct SigmoidTable {
    /// (STEPS + 1, 2): σ(x_i), −ln σ(x_i) at x_i = −RANGE + i·h.
    rows: Vec<[f32; 2]>,
}

impl SigmoidTable {
    const RANGE: f32 = 8.0;
    const STEPS: usize = 4096;

    pub(super) fn new() -> Self {
        let h = 2.0 * Self::RANGE as f64 / Self::STEPS as f64;
        let rows = (0..=Self::STEPS)
            .map(|i| {
                let x = -Self::RANGE as f64 + i as f64 * h;
                let sig = 1.0 / (1.0 + (-x).exp());
                // −ln σ(x) = softplus(−x).
                let nls = (-x).max(0.0) + (-x.abs()).exp().ln_1p();
                [sig as f32, nls as f32]
            })
            .collect();
        SigmoidTable { rows }
    }

    /// `(label − σ(f), −ln σ(±f))` as [`gradient_exact`].
    #[inline(always)]
    pub(super) fn gradient(&self, f: f32, label: bool) -> (f32, f32) {
        let t = (f + Self::RANGE) * (Self::STEPS as f32 / (2.0 * Self::RANGE));
        if !(t >= 0.0 && t < Self::STEPS as f32) {
            return gradient_exact(f, label);
        }
        let i = t as usize;
        let fr = t - i as f32;
        let (a, b) = (self.rows[i], self.rows[i + 1]);
        let sig = a[0] + fr * (b[0] - a[0]);
        if label {
            (1.0 - sig, a[1] + fr * (b[1] - a[1]))
        } else {
            // −ln σ(−f) = −ln σ(f) + f.
            (-sig, a[1] + fr * (b[1] - a[1]) + f)
        }
    }
}

/// Dot product with 16 independent partial sums (vectorizes into independent chains; the same
/// sums on every CPU).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    let mut s8 = [0.0f32; 8];
    for j in 0..8 {
        s8[j] = acc[j] + acc[j + 8];
    }
    ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_the_sigmoid() {
        let table = SigmoidTable::new();
        let mut xs = vec![-40.0f32, -8.0, -7.99, 7.99, 8.0, 50.0];
        xs.extend((0..20_000).map(|i| -10.0 + i as f32 * 0.001));
        for &f in &xs {
            let s = 1.0 / (1.0 + (-f as f64).exp());
            let (g, l) = gradient_exact(f, true);
            assert!((g as f64 - (1.0 - s)).abs() < 1e-6, "{f}");
            let want = -(s.max(1e-300)).ln();
            assert!(
                (l as f64 - want).abs() < 1e-5 * want.max(1.0),
                "{f}: {l} {want}"
            );
            let (tg, tl) = table.gradient(f, true);
            assert!(
                (tg - g).abs() < 2e-6 && (tl - l).abs() < 2e-6 * l.max(1.0),
                "{f}"
            );
            let (g, l) = gradient_exact(f, false);
            assert!((g as f64 + s).abs() < 1e-6, "{f}");
            let want = -((1.0 - s).max(1e-300)).ln();
            let want = if f > 30.0 { f as f64 } else { want };
            assert!(
                (l as f64 - want).abs() < 1e-5 * want.max(1.0),
                "{f}: {l} {want}"
            );
            let (tg, tl) = table.gradient(f, false);
            assert!(
                (tg - g).abs() < 2e-6 && (tl - l).abs() < 2e-6 * l.max(1.0),
                "{f}"
            );
        }
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-5);
    }
}
