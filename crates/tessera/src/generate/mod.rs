//! Text generation: sampling step by step with the KV cache, stop conditions, streaming.

pub mod beam;
pub mod chat;
pub mod json;
pub mod json_schema;
pub mod sampler;

pub use sampler::{Sampler, SamplingParams};

use crate::infer::{Decoder, State};
use crate::tokenizer::chat::ModelTokenizer;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::path::Path;

/// Load a decoder for generation ([`Decoder::load`]: a `.gguf` file, a Hugging Face-layout or
/// run directory) with its tokenizer and chat template.
pub fn load(path: &Path) -> Result<(Decoder, ModelTokenizer)> {
    let model = Decoder::load(path)?;
    let tok = ModelTokenizer::load(path)?;
    Ok((model, tok))
}

/// [`load`], then the LoRA adapter in directory `adapter` (PEFT's layout, as `tessera finetune
/// chat` writes it) merged into the weights ([`Decoder::apply_adapter`]). `base_name` is the model
/// as the user named it: an adapter trained on a model of another shape is refused with both
/// names.
pub fn load_with_adapter(
    path: &Path,
    base_name: &str,
    adapter: Option<&Path>,
) -> Result<(Decoder, ModelTokenizer)> {
    let (mut model, tok) = load(path)?;
    if let Some(dir) = adapter {
        let a = crate::models::lora::Adapter::load(dir, base_name, &model.cfg)?;
        model.apply_adapter(&a)?;
    }
    Ok((model, tok))
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

/// Generated text as it streams: ids decoded incrementally, stop strings found and cut, and the
/// tail that might begin a stop string held back until it is known not to.
pub struct TextOutput<'t> {
    stream: crate::tokenizer::DecodeStream<'t>,
    text: String,
    sent: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl<'t> TextOutput<'t> {
    /// Output decoded by `tok`, ending at the first of `stops`.
    pub fn new(tok: &'t Tokenizer, stops: &[String]) -> Self {
        TextOutput {
            stream: tok.stream(),
            text: String::new(),
            sent: 0,
            stops: stops.to_vec(),
            stopped: false,
        }
    }

    /// Add one generated id. Returns the text that is now final (possibly empty) and whether a
    /// stop string ended the output (the stop string and what follows it are cut).
    pub fn push(&mut self, id: u32) -> Result<(&str, bool)> {
        if let Some(piece) = self.stream.push(id)? {
            self.text.push_str(&piece);
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(at);
            self.stopped = true;
        }
        let safe = if self.stopped {
            self.text.len()
        } else {
            self.text.len() - held_back(&self.text, &self.stops)
        };
        let from = self.sent.min(safe);
        self.sent = safe.max(self.sent);
        Ok((&self.text[from..safe], self.stopped))
    }

    /// The text held back so far (at the end of generation it is final too).
    pub fn flush(&mut self) -> &str {
        let from = self.sent.min(self.text.len());
        self.sent = self.text.len();
        &self.text[from..]
    }

    /// All the text so far (stop string excluded).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The whole text, consumed.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// Generate from `prompt_ids`, calling `on_text` with each new piece of text as it is decoded.
/// `on_text` returns `false` to cancel.
pub fn generate(
    model: &Decoder,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    let cap = (prompt_ids.len() + params.max_tokens).min(model.cfg.max_position_embeddings);
    let mut st = model.new_state(cap)?;
    generate_in(model, &mut st, tok, prompt_ids, params, on_text)
}

/// [`generate`] in a given sequence state, which must be empty or hold a prefix of `prompt_ids`
/// (a chat's earlier turns; the caller checks): only the rest is fed. The state ends holding the
/// prompt and the generated tokens that were fed back (all but the last one sampled, unless
/// `max_tokens` ran out): `history[..state_len]`.
pub fn generate_in(
    model: &Decoder,
    st: &mut State,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        return Err(Error::Input("the prompt is empty (no tokens)".into()));
    }
    let cfg = &model.cfg;
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
    st.truncate(prompt_ids.len() - 1);
    let keep = st.len();
    let mut logits = model.forward(st, &prompt_ids[keep..])?;
    let mut out = TextOutput::new(tok, &params.stop);
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
        let (piece, stopped) = out.push(next)?;
        if !piece.is_empty() && !on_text(piece) {
            finish = FinishReason::Cancelled;
            break;
        }
        if stopped {
            finish = FinishReason::Stop;
            break;
        }
        if history.len() >= max_ctx {
            break;
        }
        logits = model.forward(st, &[next])?;
    }
    let rest = out.flush();
    if !rest.is_empty() && finish != FinishReason::Cancelled {
        on_text(rest);
    }
    let text = out.into_text();
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
