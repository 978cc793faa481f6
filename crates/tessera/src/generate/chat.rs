//! Multi-turn chat over a model's own template: history, context budgeting, streaming answers.

use super::{generate_in, Generation, SamplingParams};
use crate::infer::{Decoder, State};
use crate::tokenizer::chat::Message;
use crate::tokenizer::chat::ModelTokenizer;
use crate::{Error, Result};

/// A conversation with a model. The KV cache is kept between turns: each answer feeds only the
/// tokens after the part of the conversation already cached.
pub struct ChatSession<'a> {
    model: &'a Decoder,
    tok: &'a ModelTokenizer,
    system: Option<String>,
    /// User and assistant turns, oldest first.
    turns: Vec<Message>,
    state: State,
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

impl<'a> ChatSession<'a> {
    /// A new conversation, optionally with a system prompt (else the template's default applies).
    pub fn new(
        model: &'a Decoder,
        tok: &'a ModelTokenizer,
        system: Option<String>,
    ) -> Result<Self> {
        tok.template()?;
        Ok(ChatSession {
            state: model.new_state(model.cfg.max_position_embeddings)?,
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
        self.state.clear();
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
        let ctx = self.model.cfg.max_position_embeddings;
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
        let ctx = self.model.cfg.max_position_embeddings;
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
        self.state.truncate(common);
        let tok = &self.tok.tokenizer;
        let generation = generate_in(self.model, &mut self.state, tok, &ids, &p, on_text)?;
        let fed = self.state.len();
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
