//! Turning logits into the next token: greedy or sampled, with the usual filters.

use crate::util::rng::Rng;

/// Decoding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1.0 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = off).
    pub min_p: f32,
    /// Penalize tokens already in the context (1.0 = off), as in CTRL / Hugging Face.
    pub repetition_penalty: f32,
    /// Seed of the sampling generator.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop when any of these strings appears (it is not included in the output).
    pub stop: Vec<String>,
    /// Keep going past the end-of-sequence token.
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Check ranges; errors say which setting is wrong.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::Input(m.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p must be in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition penalty must be a finite number > 0");
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty");
        }
        Ok(())
    }
}

/// Stateful sampler (owns its random generator).
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    scratch: Vec<(f32, u32)>,
    /// Penalized logits and the probabilities of the candidates (reused: no allocation per token).
    penalized: Vec<f32>,
    seen: Vec<u64>,
    probs: Vec<f32>,
}

/// Candidates whose logit lies more than this many temperatures below the best are left out
/// before sorting: their probability is below e^-40 of the best one's (all of them together,
/// for any vocabulary under 10^9 tokens, below 10^-8), so leaving them out changes no result
/// beyond that and spares sorting the whole vocabulary at every step.
const NEGLIGIBLE: f32 = 40.0;

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Sampler {
            params,
            rng,
            scratch: Vec::new(),
            penalized: Vec::new(),
            seen: Vec::new(),
            probs: Vec::new(),
        }
    }

    /// Pick the next token from `logits` (V), given the ids already in the context.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let logits = if p.repetition_penalty != 1.0 {
            let pen = &mut self.penalized;
            pen.clear();
            pen.extend_from_slice(logits);
            // Each id once (a bitmap of the ids already penalized).
            let seen = &mut self.seen;
            seen.clear();
            seen.resize(pen.len().div_ceil(64), 0);
            for &id in history {
                let (w, b) = (id as usize / 64, 1u64 << (id % 64));
                if (id as usize) < pen.len() && seen[w] & b == 0 {
                    seen[w] |= b;
                    let l = &mut pen[id as usize];
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
            &pen[..]
        } else {
            logits
        };
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, descending (NaN never chosen); see NEGLIGIBLE.
        let best = logits
            .iter()
            .copied()
            .filter(|l| !l.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        let floor = best - NEGLIGIBLE * p.temperature;
        let cand = &mut self.scratch;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, &l)| l >= floor || !best.is_finite())
                .map(|(i, &l)| (if l.is_nan() { f32::NEG_INFINITY } else { l }, i as u32)),
        );
        if cand.is_empty() {
            return argmax(logits);
        }
        let k = if p.top_k > 0 {
            p.top_k.min(cand.len())
        } else {
            cand.len()
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            cand.truncate(k);
        }
        cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let max = cand[0].0;
        let probs = &mut self.probs;
        probs.clear();
        probs.extend(cand.iter().map(|c| ((c.0 - max) / p.temperature).exp()));
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        // min-p relative to the most likely token, then top-p nucleus.
        let mut keep = probs.len();
        if p.min_p > 0.0 {
            let thr = p.min_p * probs[0];
            keep = probs.iter().take_while(|&&x| x >= thr).count().max(1);
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut n = 0;
            for &x in &probs[..keep] {
                acc += x;
                n += 1;
                if acc >= p.top_p {
                    break;
                }
            }
            keep = n.max(1);
        }
        let mass: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.uniform_f32() * mass;
        for (i, &x) in probs[..keep].iter().enumerate() {
            r -= x;
            if r <= 0.0 {
                return cand[i].1;
            }
        }
        cand[keep - 1].1
    }
}

/// Index of the largest value (first on ties; NaN never chosen over a number, and index 0 when
/// the first value is NaN, as a scan keeping the first strictly larger value gives).
///
/// Two passes the compiler vectorizes (the largest value over 16 lanes, then its first index)
/// instead of one scan with a data-dependent branch per element: the greedy pick of every
/// decoded token reads a whole vocabulary row.
pub fn argmax(xs: &[f32]) -> u32 {
    match xs.first() {
        None => return 0,
        Some(x) if x.is_nan() => return 0,
        _ => {}
    }
    // `v > m` is false for NaN, so NaN never becomes the maximum.
    let bigger = |m: f32, v: f32| if v > m { v } else { m };
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = bigger(*m, v);
        }
    }
    let best = tail
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| bigger(m, v));
    xs.iter().position(|&v| v == best).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn argmax_equals_a_first_strictly_larger_scan() {
        let scan = |xs: &[f32]| {
            let mut best = 0;
            for (i, &x) in xs.iter().enumerate() {
                if x > xs[best] {
                    best = i;
                }
            }
            best as u32
        };
        let mut rng = crate::util::rng::Rng::new(7);
        for n in [0, 1, 5, 16, 17, 40, 1000] {
            for case in 0..6 {
                let mut xs: Vec<f32> = (0..n).map(|_| (rng.below(9) as f32 - 4.0) / 2.0).collect();
                // Ties everywhere (values on a coarse grid), plus NaN, ±0 and infinities.
                let mut put = |v: f32| {
                    if n > 0 {
                        let i = rng.below(n);
                        xs[i] = v;
                    }
                };
                match case {
                    1 => put(f32::NAN),
                    2 => put(f32::INFINITY),
                    3 => xs.iter_mut().for_each(|x| *x = f32::NEG_INFINITY),
                    4 => {
                        put(-0.0);
                        put(0.0);
                        xs.iter_mut().for_each(|x| *x = x.min(0.0));
                    }
                    5 if n > 0 => xs[0] = f32::NAN,
                    _ => {}
                }
                assert_eq!(argmax(&xs), scan(&xs), "{xs:?}");
            }
        }
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let logits = [0.5, 1.0, 0.9, -2.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.0)
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[]), 1);
        }
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_and_min_p_restrict_support() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.7,
            seed: 1,
            ..params(1.0)
        });
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]) <= 1);
        }
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.2,
            seed: 2,
            ..params(1.0)
        });
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]) <= 1);
        }
        // frequencies follow the softmax
        let mut s = Sampler::new(SamplingParams {
            seed: 3,
            ..params(1.0)
        });
        let n = 20000;
        let zero = (0..n).filter(|_| s.sample(&logits, &[]) == 0).count() as f64 / n as f64;
        assert!((zero - 0.6439).abs() < 0.02, "{zero}");
    }

    #[test]
    fn repetition_penalty_changes_greedy_choice() {
        let logits = [2.0f32, 1.9, -1.0];
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.5,
            ..params(0.0)
        });
        assert_eq!(s.sample(&logits, &[0]), 1);
        assert_eq!(s.sample(&logits, &[]), 0);
        assert!(SamplingParams {
            top_p: 0.0,
            ..params(1.0)
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            temperature: -1.0,
            ..params(1.0)
        }
        .validate()
        .is_err());
    }
}
