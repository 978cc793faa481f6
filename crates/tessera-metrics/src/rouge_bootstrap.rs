//! rouge-score's `BootstrapAggregator` (1000 resamples, 95% interval, NumPy percentiles),
//! reproduced exactly for a seed: the same draws as `np.random.seed(seed)` followed by
//! `aggregator.aggregate()`, types in the order they were configured.

use serde::Serialize;

use crate::error::{MetricsError, Result};
use crate::mt19937::Mt19937;
use crate::rouge::Prf;

/// Low / mid / high bounds of one ROUGE type (rouge-score's `AggregateScore`).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct AggregateScore {
    /// Lower percentile (2.5th by default).
    pub low: Prf,
    /// Median of the resampled means.
    pub mid: Prf,
    /// Upper percentile (97.5th by default).
    pub high: Prf,
}

/// Bootstrap settings; `Default` equals `BootstrapAggregator()` seeded with 0.
#[derive(Clone, Copy, Debug)]
pub struct Bootstrap {
    /// Number of resamples (1000).
    pub n_samples: usize,
    /// Confidence interval (0.95).
    pub confidence_interval: f64,
    /// Seed of NumPy's global generator (`np.random.seed`).
    pub seed: u32,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            n_samples: 1000,
            confidence_interval: 0.95,
            seed: 0,
        }
    }
}

/// NumPy's `_lerp`: `a + (b-a)*t`, computed from `b` when `t >= 0.5`.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// `np.percentile(sorted, q)` with the default linear method; `sorted` ascending.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let quant = q / 100.0;
    let virt = (n - 1) as f64 * quant;
    if virt >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virt < 0.0 {
        return sorted[0];
    }
    let prev = virt.floor();
    let gamma = virt - prev;
    let i = prev as usize;
    lerp(sorted[i], sorted[i + 1], gamma)
}

impl Bootstrap {
    /// Aggregates per-segment scores (`segs[i][k]`: segment `i`, type `k`) into intervals,
    /// one per type.
    pub fn aggregate(&self, segs: &[Vec<Prf>]) -> Result<Vec<AggregateScore>> {
        if segs.is_empty() {
            return Err(MetricsError::NoSegments);
        }
        if self.n_samples == 0 || !(0.0..=1.0).contains(&self.confidence_interval) {
            return Err(MetricsError::InvalidOption(
                "bootstrap needs n_samples > 0 and a confidence interval in [0, 1]".into(),
            ));
        }
        let n = segs.len();
        if n > u32::MAX as usize {
            return Err(MetricsError::InvalidOption(
                "too many segments for the bootstrap".into(),
            ));
        }
        let ntypes = segs[0].len();
        if segs.iter().any(|s| s.len() != ntypes) {
            return Err(MetricsError::InvalidOption(
                "every segment needs the same ROUGE types".into(),
            ));
        }
        let mut rng = Mt19937::new(self.seed);
        let delta = (1.0 - self.confidence_interval) / 2.0;
        let qs = [100.0 * delta, 100.0 * 0.5, 100.0 * (1.0 - delta)];
        let mut out = Vec::with_capacity(ntypes);
        #[allow(clippy::needless_range_loop)] // `k` selects the type inside each resampled row
        for k in 0..ntypes {
            let mut means: [Vec<f64>; 3] = Default::default();
            for _ in 0..self.n_samples {
                let mut acc = [0.0f64; 3];
                for _ in 0..n {
                    let s = &segs[rng.below(n as u32) as usize][k];
                    acc[0] += s.precision;
                    acc[1] += s.recall;
                    acc[2] += s.fmeasure;
                }
                for c in 0..3 {
                    means[c].push(acc[c] / n as f64);
                }
            }
            let mut bounds = [[0.0; 3]; 3]; // [bound][measure]
            for (c, col) in means.iter_mut().enumerate() {
                col.sort_by(|a, b| a.total_cmp(b));
                for (b, q) in qs.iter().enumerate() {
                    bounds[b][c] = percentile(col, *q);
                }
            }
            let prf = |b: [f64; 3]| Prf {
                precision: b[0],
                recall: b[1],
                fmeasure: b[2],
            };
            out.push(AggregateScore {
                low: prf(bounds[0]),
                mid: prf(bounds[1]),
                high: prf(bounds[2]),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
    }
}
