//! Multi-turn chat over a model's own template: history, context budgeting, streaming answers.

use super::{generate_in, CausalLm, Generation, SamplingParams};
use crate::infer::QuantLlama;
use crate::models::gguf_loader::load_gguf_file;
use crate::models::{ModelConfig, Transformer};
use crate::tokenizer::chat::Message;
use crate::tokenizer::chat::ModelTokenizer;
use crate::{Error, Result};
use candle_core::{DType, Device};
use std::path::Path;

/// Load a decoder from a `.gguf` file or a Hugging Face-layout / run directory, with its tokenizer
/// (what chat, generate and perplexity evaluation all run on).
pub fn load_decoder(path: &Path, device: &Device) -> Result<(Transformer, ModelTokenizer)> {
    let model = if path.is_file() {
        load_gguf_file(path, DType::F32, device)?
    } else {
        let dir = crate::train::checkpoint::resolve_model_dir(path)?;
        Transformer::load_dir(&dir, DType::F32, device)?
    };
    let tok = ModelTokenizer::load(path)?;
    Ok((model, tok))
}

/// A decoder for generation: a GGUF file runs on its quantized weights ([`QuantLlama`]); a
/// Hugging Face-layout or run directory on the tensor engine ([`Transformer`], f32).
pub enum Decoder {
    /// Tensor-engine model (safetensors checkpoints).
    Dense(Transformer),
    /// Quantized GGUF model.
    Quant(QuantLlama),
}

/// The sequence state of a [`Decoder`].
pub enum DecoderState {
    Dense(super::DenseState),
    Quant(Box<crate::infer::State>),
}

impl Decoder {
    /// Use at most `n` positions of context (at least 1; never more than the model was built
    /// for): chat and generation then budget their prompts for it, and states hold that many.
    pub fn limit_context(&mut self, n: usize) {
        let cfg = match self {
            Decoder::Dense(m) => &mut m.cfg,
            Decoder::Quant(m) => &mut m.cfg,
        };
        cfg.max_position_embeddings = cfg.max_position_embeddings.min(n.max(1));
    }

    /// A short description for status lines ("quantized GGUF, 2 threads", "f32").
    pub fn describe(&self) -> String {
        match self {
            Decoder::Dense(_) => "f32 weights".into(),
            Decoder::Quant(m) => format!(
                "quantized weights, {} kernels, {} threads",
                crate::kernels::quant::simd_level(),
                m.threads()
            ),
        }
    }
}

impl CausalLm for Decoder {
    type State = DecoderState;
    fn config(&self) -> &ModelConfig {
        match self {
            Decoder::Dense(m) => &m.cfg,
            Decoder::Quant(m) => &m.cfg,
        }
    }
    fn new_state(&self, capacity: usize) -> Result<DecoderState> {
        Ok(match self {
            Decoder::Dense(m) => DecoderState::Dense(m.new_state(capacity)?),
            Decoder::Quant(m) => DecoderState::Quant(Box::new(CausalLm::new_state(m, capacity)?)),
        })
    }
    fn state_len(&self, st: &DecoderState) -> usize {
        match (self, st) {
            (Decoder::Dense(m), DecoderState::Dense(s)) => m.state_len(s),
            (Decoder::Quant(m), DecoderState::Quant(s)) => m.state_len(s),
            _ => 0,
        }
    }
    fn truncate(&self, st: &mut DecoderState, len: usize) {
        match (self, st) {
            (Decoder::Dense(m), DecoderState::Dense(s)) => m.truncate(s, len),
            (Decoder::Quant(m), DecoderState::Quant(s)) => CausalLm::truncate(m, s, len),
            _ => {}
        }
    }
    fn feed<'s>(&self, st: &'s mut DecoderState, ids: &[u32]) -> Result<&'s [f32]> {
        match (self, st) {
            (Decoder::Dense(m), DecoderState::Dense(s)) => m.feed(s, ids),
            (Decoder::Quant(m), DecoderState::Quant(s)) => m.feed(s, ids),
            _ => Err(Error::Input("a state of another model".into())),
        }
    }
}

/// Load a model for generation (see [`Decoder`]) with its tokenizer.
pub fn load_generator(path: &Path, device: &Device) -> Result<(Decoder, ModelTokenizer)> {
    let model = if path.is_file() {
        Decoder::Quant(QuantLlama::load(path)?)
    } else {
        let dir = crate::train::checkpoint::resolve_model_dir(path)?;
        Decoder::Dense(Transformer::load_dir(&dir, DType::F32, device)?)
    };
    let tok = ModelTokenizer::load(path)?;
    Ok((model, tok))
}

/// A conversation with a model. The KV cache is kept between turns: each answer feeds only the
/// tokens after the part of the conversation already cached.
pub struct ChatSession<'a, M: CausalLm = Transformer> {
    model: &'a M,
    tok: &'a ModelTokenizer,
    system: Option<String>,
    /// User and assistant turns, oldest first.
    turns: Vec<Message>,
    state: M::State,
    /// The ids in `state`'s cache.
    cached: Vec<u32>,
}

/// What one answer did.
pub struct Reply {
    /// The generation (text, ids, finish reason).
    pub generation: Generation,
    /// Oldest turns dropped to fit the context before answering.
    pub dropped_turns: usize,
}

impl<'a, M: CausalLm> ChatSession<'a, M> {
    /// A new conversation, optionally with a system prompt (else the template's default applies).
    pub fn new(model: &'a M, tok: &'a ModelTokenizer, system: Option<String>) -> Result<Self> {
        tok.template()?;
        Ok(ChatSession {
            state: model.new_state(model.config().max_position_embeddings)?,
            model,
            tok,
            system,
            turns: Vec::new(),
            cached: Vec::new(),
        })
    }

    /// Forget the conversation (the system prompt stays).
    pub fn reset(&mut self) {
        self.turns.clear();
        self.model.truncate(&mut self.state, 0);
        self.cached.clear();
    }

    /// Number of user + assistant messages kept.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// True when no turn has been made.
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn messages(&self, from: usize) -> Vec<Message> {
        let mut m = Vec::with_capacity(self.turns.len() + 1);
        if let Some(s) = &self.system {
            m.push(Message::new("system", s.clone()));
        }
        m.extend(self.turns[from..].iter().cloned());
        m
    }

    /// Prompt ids for the conversation (whose last turn is the new user message), dropping the
    /// oldest turns (in user/assistant pairs) until the prompt leaves room for `reserve` new
    /// tokens. Returns (ids, dropped turns). When even the new message alone does not fit, it is
    /// removed again and the history is left as it was.
    fn fit_prompt(&mut self, reserve: usize) -> Result<(Vec<u32>, usize)> {
        let ctx = self.model.config().max_position_embeddings;
        let mut from = 0;
        loop {
            let ids = self.tok.prompt_ids(&self.messages(from), true)?;
            let last = from + 1 >= self.turns.len();
            if ids.len() + reserve <= ctx || (last && ids.len() < ctx) {
                self.turns.drain(..from);
                return Ok((ids, from));
            }
            if last {
                self.turns.pop();
                return Err(Error::Input(format!(
                    "the message is {} tokens long with the template; the model's context is {ctx}",
                    ids.len()
                )));
            }
            from += 2.min(self.turns.len() - 1 - from);
        }
    }

    /// Answer `user`, streaming text to `on_text` (return false to stop the answer early).
    /// The answer is kept in the history even when stopped early.
    pub fn send(
        &mut self,
        user: &str,
        params: &SamplingParams,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Reply> {
        self.turns.push(Message::new("user", user));
        let ctx = self.model.config().max_position_embeddings;
        let reserve = params.max_tokens.min(ctx / 2);
        let (ids, dropped_turns) = self.fit_prompt(reserve)?;
        let mut p = params.clone();
        p.max_tokens = p.max_tokens.min(ctx - ids.len());
        // Keep the cached tokens this prompt starts with.
        let common = self
            .cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count();
        self.model.truncate(&mut self.state, common);
        let tok = &self.tok.tokenizer;
        let generation = generate_in(self.model, &mut self.state, tok, &ids, &p, on_text)?;
        let fed = self.model.state_len(&self.state);
        self.cached.clear();
        self.cached
            .extend(ids.iter().chain(&generation.ids).take(fed));
        self.turns
            .push(Message::new("assistant", generation.text.clone()));
        Ok(Reply {
            generation,
            dropped_turns,
        })
    }
}
