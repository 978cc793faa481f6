//! Learning-rate schedules: linear warmup, then cosine decay to a floor (language models) or
//! linear decay to 0 (fine-tuning, BERT's recipe), or a constant rate (benchmarks).

/// A learning rate per optimizer step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Schedule {
    /// Linear warmup over `warmup` steps to `lr`, then cosine decay to `min_lr` at `total`.
    Cosine {
        lr: f64,
        min_lr: f64,
        warmup: usize,
        total: usize,
    },
    /// Linear warmup over `warmup` steps to `lr`, then linear decay to 0 at `total`.
    Linear {
        lr: f64,
        warmup: usize,
        total: usize,
    },
    /// `lr` throughout.
    Constant { lr: f64 },
}

impl Schedule {
    /// The rate at optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        match *self {
            Schedule::Cosine {
                lr,
                min_lr,
                warmup,
                total,
            } => {
                if step < warmup {
                    return lr * (step + 1) as f64 / warmup as f64;
                }
                if step >= total {
                    return min_lr;
                }
                let span = (total - warmup).max(1) as f64;
                let progress = (step - warmup) as f64 / span;
                let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                min_lr + coeff * (lr - min_lr)
            }
            Schedule::Linear { lr, warmup, total } => {
                if step < warmup {
                    return lr * (step + 1) as f64 / warmup as f64;
                }
                lr * (total.saturating_sub(step) as f64
                    / total.saturating_sub(warmup).max(1) as f64)
            }
            Schedule::Constant { lr } => lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule::Cosine {
            lr: 1.0,
            min_lr: 0.1,
            warmup: 10,
            total: 110,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-12);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        let mut prev = f64::INFINITY;
        for step in 10..110 {
            let l = s.lr(step);
            assert!(l <= prev);
            prev = l;
        }
    }

    #[test]
    fn warmup_then_linear_to_zero() {
        let s = Schedule::Linear {
            lr: 2.0,
            warmup: 4,
            total: 20,
        };
        assert!((s.lr(0) - 0.5).abs() < 1e-12);
        assert!((s.lr(3) - 2.0).abs() < 1e-12);
        assert!((s.lr(12) - 1.0).abs() < 1e-12);
        assert_eq!(s.lr(20), 0.0);
        assert_eq!(Schedule::Constant { lr: 0.3 }.lr(1000), 0.3);
    }
}
