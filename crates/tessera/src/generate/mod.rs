//! Text generation: sampling step by step with the KV cache, stop conditions, streaming.

pub mod chat;
pub mod sampler;

pub use sampler::{Sampler, SamplingParams};

use crate::models::{KvCache, Transformer};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` or the model's context length was reached.
    Length,
    /// The caller asked to stop (e.g. Ctrl-C).
    Cancelled,
}

/// The result of one generation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Generation {
    /// Generated text (stop string excluded).
    pub text: String,
    /// Generated token ids (EOS excluded).
    pub ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
}

/// Longest suffix of `text` that is a proper prefix of some stop string (held back while streaming).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > keep && text.ends_with(&s[..i]) {
                keep = i;
            }
        }
    }
    keep
}

/// Logits (V) of the last position after feeding `ids` starting at the cache's position.
pub fn step_logits(model: &Transformer, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
    let pos = cache.len();
    let input = Tensor::new(ids, model.device())?.unsqueeze(0)?; // (1, T)
    let h = model.forward_hidden(&input, pos, Some(cache), None)?; // (1, T, C)
    let last = h.narrow(1, ids.len() - 1, 1)?; // (1, 1, C)
    let logits = model.head(&last)?; // (1, 1, V)
    Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// Generate from `prompt_ids`, calling `on_text` with each new piece of text as it is decoded.
/// `on_text` returns `false` to cancel.
pub fn generate(
    model: &Transformer,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        return Err(Error::Input("the prompt is empty (no tokens)".into()));
    }
    let max_ctx = model.cfg.max_position_embeddings;
    if prompt_ids.len() >= max_ctx {
        return Err(Error::Input(format!(
            "the prompt has {} tokens; the model's context is {max_ctx}",
            prompt_ids.len()
        )));
    }
    if let Some(&bad) = prompt_ids
        .iter()
        .find(|&&i| i as usize >= model.cfg.vocab_size)
    {
        return Err(Error::Input(format!(
            "token id {bad} is outside the vocabulary ({})",
            model.cfg.vocab_size
        )));
    }
    let eos = model.cfg.eos_token_id.or_else(|| tok.eos_id());
    let mut sampler = Sampler::new(params.clone());
    let mut cache = KvCache::new(model.cfg.num_layers);
    let mut logits = step_logits(model, prompt_ids, &mut cache)?;
    let mut history: Vec<u32> = prompt_ids.to_vec();
    let mut stream = tok.stream();
    let mut text = String::new();
    let mut sent = 0usize;
    let mut finish = FinishReason::Length;
    let mut ids = Vec::new();
    for _ in 0..params.max_tokens {
        let next = sampler.sample(&logits, &history);
        if Some(next) == eos && !params.ignore_eos {
            finish = FinishReason::Eos;
            break;
        }
        ids.push(next);
        history.push(next);
        if let Some(piece) = stream.push(next)? {
            text.push_str(&piece);
        }
        if let Some(at) = params
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(at);
            finish = FinishReason::Stop;
            break;
        }
        let safe = text.len() - held_back(&text, &params.stop);
        if safe > sent {
            if !on_text(&text[sent..safe]) {
                sent = safe;
                finish = FinishReason::Cancelled;
                break;
            }
            sent = safe;
        }
        if history.len() >= max_ctx {
            break;
        }
        logits = step_logits(model, &[next], &mut cache)?;
    }
    if text.len() > sent {
        on_text(&text[sent..]);
    }
    Ok(Generation {
        text,
        ids,
        finish_reason: finish,
        prompt_tokens: prompt_ids.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn holds_back_partial_stop_strings() {
        let stops = vec!["\n\nUser:".to_string(), "END".to_string()];
        assert_eq!(held_back("hello\n\nUs", &stops), 4);
        assert_eq!(held_back("hello E", &stops), 1);
        assert_eq!(held_back("hello", &stops), 0);
    }
}
