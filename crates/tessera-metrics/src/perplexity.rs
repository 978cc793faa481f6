//! Perplexity and bits per character from summed negative log-likelihoods (in nats), the
//! numbers a language-model evaluation reports.

use serde::Serialize;

use crate::error::{MetricsError, Result};

/// Language-model figures from a summed loss.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct LmScores {
    /// Mean loss per token, nats.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Summed loss in bits divided by the number of characters (when known).
    pub bits_per_char: Option<f64>,
    /// Summed loss in bits divided by the number of bytes (when known).
    pub bits_per_byte: Option<f64>,
}

fn positive(n: u64, what: &str) -> Result<f64> {
    if n == 0 {
        return Err(MetricsError::InvalidOption(format!(
            "{what} must be positive"
        )));
    }
    Ok(n as f64)
}

/// `exp(sum_nll / tokens)`.
pub fn perplexity(sum_nll: f64, tokens: u64) -> Result<f64> {
    Ok((sum_nll / positive(tokens, "token count")?).exp())
}

/// `sum_nll / (chars · ln 2)`.
pub fn bits_per_char(sum_nll: f64, chars: u64) -> Result<f64> {
    Ok(sum_nll / (positive(chars, "character count")? * std::f64::consts::LN_2))
}

/// All figures at once; `chars` / `bytes` of the scored text when known.
pub fn lm_scores(
    sum_nll: f64,
    tokens: u64,
    chars: Option<u64>,
    bytes: Option<u64>,
) -> Result<LmScores> {
    if !sum_nll.is_finite() || sum_nll < 0.0 {
        return Err(MetricsError::InvalidOption(format!(
            "summed loss must be finite and non-negative, got {sum_nll}"
        )));
    }
    let loss = sum_nll / positive(tokens, "token count")?;
    Ok(LmScores {
        loss,
        perplexity: loss.exp(),
        bits_per_char: chars.map(|c| bits_per_char(sum_nll, c)).transpose()?,
        bits_per_byte: bytes.map(|b| bits_per_char(sum_nll, b)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_model() {
        // A uniform model over 50 symbols: loss ln 50 per token.
        let s = lm_scores(10.0 * 50f64.ln(), 10, Some(20), None).unwrap();
        assert!((s.perplexity - 50.0).abs() < 1e-9);
        assert!((s.bits_per_char.unwrap() - 0.5 * 50f64.log2()).abs() < 1e-12);
        assert!(perplexity(1.0, 0).is_err());
        assert!(lm_scores(f64::NAN, 1, None, None).is_err());
    }
}
