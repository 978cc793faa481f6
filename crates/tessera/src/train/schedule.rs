//! Learning-rate schedule: linear warmup, then cosine decay to `min_lr`.

/// Learning rate at optimizer step `step` (0-based).
pub fn lr_at(step: usize, lr: f64, min_lr: f64, warmup: usize, max_steps: usize) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= max_steps {
        return min_lr;
    }
    let span = (max_steps - warmup).max(1) as f64;
    let progress = (step - warmup) as f64 / span;
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    min_lr + coeff * (lr - min_lr)
}

#[cfg(test)]
mod tests {
    use super::lr_at;

    #[test]
    fn warmup_then_cosine() {
        assert!((lr_at(0, 1.0, 0.1, 10, 110) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 1.0, 0.1, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 1.0, 0.1, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, 1.0, 0.1, 10, 110) - 0.55).abs() < 1e-12);
        assert!((lr_at(110, 1.0, 0.1, 10, 110) - 0.1).abs() < 1e-12);
        let mut prev = f64::INFINITY;
        for s in 10..110 {
            let l = lr_at(s, 1.0, 0.1, 10, 110);
            assert!(l <= prev);
            prev = l;
        }
    }
}
