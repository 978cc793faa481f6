//! Text generation: sampling step by step with the KV cache, stop conditions, streaming.

pub mod chat;
pub mod sampler;

pub use sampler::{Sampler, SamplingParams};

use crate::infer::QuantLlama;
use crate::models::{KvCache, ModelConfig, Transformer};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// A decoder that generation drives token by token: the tensor-engine [`Transformer`], the
/// quantized [`QuantLlama`], or either ([`chat::Decoder`]).
pub trait CausalLm {
    /// The cache and buffers of one sequence.
    type State;
    /// The model's configuration.
    fn config(&self) -> &ModelConfig;
    /// A fresh sequence with room for `capacity` tokens.
    fn new_state(&self, capacity: usize) -> Result<Self::State>;
    /// Tokens in the state's cache.
    fn state_len(&self, st: &Self::State) -> usize;
    /// Keep only the first `len` cached tokens (or start over, where a model cannot cut).
    fn truncate(&self, st: &mut Self::State, len: usize);
    /// Feed `ids` after what the state holds; the logits (V) of the last one.
    fn feed<'s>(&self, st: &'s mut Self::State, ids: &[u32]) -> Result<&'s [f32]>;
}

/// A [`Transformer`]'s sequence state: its KV cache and the last logits.
#[derive(Default)]
pub struct DenseState {
    cache: KvCache,
    logits: Vec<f32>,
}

impl CausalLm for Transformer {
    type State = DenseState;
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn new_state(&self, _capacity: usize) -> Result<DenseState> {
        Ok(DenseState {
            cache: KvCache::new(self.cfg.num_layers),
            logits: Vec::new(),
        })
    }
    fn state_len(&self, st: &DenseState) -> usize {
        st.cache.len()
    }
    fn truncate(&self, st: &mut DenseState, len: usize) {
        if len < st.cache.len() {
            st.cache.clear();
        }
    }
    fn feed<'s>(&self, st: &'s mut DenseState, ids: &[u32]) -> Result<&'s [f32]> {
        st.logits = step_logits(self, ids, &mut st.cache)?;
        Ok(&st.logits)
    }
}

impl CausalLm for QuantLlama {
    type State = crate::infer::State;
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn new_state(&self, capacity: usize) -> Result<Self::State> {
        QuantLlama::new_state(self, capacity)
    }
    fn state_len(&self, st: &Self::State) -> usize {
        st.len()
    }
    fn truncate(&self, st: &mut Self::State, len: usize) {
        st.truncate(len);
    }
    fn feed<'s>(&self, st: &'s mut Self::State, ids: &[u32]) -> Result<&'s [f32]> {
        self.forward(st, ids)
    }
}

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
pub fn generate<M: CausalLm>(
    model: &M,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    let cap = (prompt_ids.len() + params.max_tokens).min(model.config().max_position_embeddings);
    let mut st = model.new_state(cap)?;
    generate_in(model, &mut st, tok, prompt_ids, params, on_text)
}

/// [`generate`] in a given sequence state, which must be empty or hold a prefix of `prompt_ids`
/// (a chat's earlier turns; the caller checks): only the rest is fed. The state ends holding the
/// prompt and the generated tokens that were fed back (all but the last one sampled, unless
/// `max_tokens` ran out): `history[..state_len]`.
pub fn generate_in<M: CausalLm>(
    model: &M,
    st: &mut M::State,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        return Err(Error::Input("the prompt is empty (no tokens)".into()));
    }
    let cfg = model.config();
    let max_ctx = cfg.max_position_embeddings;
    if prompt_ids.len() >= max_ctx {
        return Err(Error::Input(format!(
            "the prompt has {} tokens; the model's context is {max_ctx}",
            prompt_ids.len()
        )));
    }
    if let Some(&bad) = prompt_ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
        return Err(Error::Input(format!(
            "token id {bad} is outside the vocabulary ({})",
            cfg.vocab_size
        )));
    }
    let eos = cfg.eos_token_id.or_else(|| tok.eos_id());
    let mut sampler = Sampler::new(params.clone());
    // Reuse the cached prefix, but always feed at least the last prompt token (for its logits).
    let mut history: Vec<u32> = Vec::with_capacity(prompt_ids.len() + params.max_tokens);
    history.extend_from_slice(prompt_ids);
    let keep = model.state_len(st).min(prompt_ids.len() - 1);
    model.truncate(st, keep);
    let keep = model.state_len(st);
    let mut logits = model.feed(st, &prompt_ids[keep..])?;
    let mut stream = tok.stream();
    let mut text = String::new();
    let mut sent = 0usize;
    let mut finish = FinishReason::Length;
    let mut ids = Vec::with_capacity(params.max_tokens);
    for _ in 0..params.max_tokens {
        let next = sampler.sample(logits, &history);
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
        logits = model.feed(st, &[next])?;
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
