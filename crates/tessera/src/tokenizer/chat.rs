//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`), rendered as Hugging
//! Face transformers renders it, and the forge-proof prompt encoding.
//!
//! The environment matches transformers' template sandbox: `trim_blocks` and `lstrip_blocks` on,
//! loop controls (`break`, `continue`), Python string methods (`.strip()`, `.startswith()`, ...),
//! and the globals and filters templates call: `raise_exception`, `strftime_now`, `tojson` (Python
//! `json.dumps` output, non-ASCII kept), `bos_token`, `eos_token`, `add_generation_prompt`.
//!
//! [`prompt_ids`] recognizes special-token text only where the template wrote it, never in a
//! message's content, so text typed by a user can never become a turn marker.

mod extras;
mod model;

pub use model::ModelTokenizer;

use super::Tokenizer;
use crate::{Error, Result};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// Parse a JSON array of `{"role": ..., "content": ...}` objects, naming what is wrong.
    pub fn list_from_json(text: &str) -> Result<Vec<Message>> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Input(format!("messages: not valid JSON: {e}")))?;
        let arr = v.as_array().ok_or_else(|| {
            Error::Input(
                "messages: expected a JSON array of {\"role\", \"content\"} objects".into(),
            )
        })?;
        arr.iter()
            .enumerate()
            .map(|(i, m)| {
                let field = |k: &str| {
                    m.get(k).and_then(serde_json::Value::as_str).ok_or_else(|| {
                        Error::Input(format!("messages[{i}]: '{k}' must be a string"))
                    })
                };
                Ok(Message::new(field("role")?, field("content")?))
            })
            .collect()
    }
}

/// A compiled chat template with the special-token texts it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChatTemplate(bos={:?}, eos={:?})",
            self.bos_token, self.eos_token
        )
    }
}

fn template_err(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Input(format!("chat template: {msg}"))
}

/// Private-use characters around a message index mark where content goes in a rendering.
const MARK_OPEN: char = '\u{F8F0}';
const MARK_CLOSE: char = '\u{F8F1}';

impl ChatTemplate {
    /// Compile `source` (a Jinja chat template); `bos_token`/`eos_token` are the texts of the
    /// model's special tokens (empty when it has none).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(template_err)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The Jinja source the template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render `messages` (with `add_generation_prompt` opening the assistant's turn).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_json(
            &serde_json::to_value(messages)?,
            add_generation_prompt,
            None,
        )
    }

    /// Render messages given as JSON objects (tool calls and other fields pass through), with
    /// optional extra template variables (`tools`, `documents`, ...).
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
        extra: Option<&serde_json::Value>,
    ) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(template_err)?;
        let mut ctx = serde_json::Map::new();
        if let Some(serde_json::Value::Object(extra)) = extra {
            ctx.extend(extra.clone());
        }
        ctx.insert("messages".into(), messages.clone());
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos_token.clone().into());
        ctx.insert("eos_token".into(), self.eos_token.clone().into());
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(template_err)
    }

    /// The rendering cut into template text and message contents, in order. Contents are found by
    /// rendering with markers in their place; a template that trims contents is followed.
    pub fn render_parts(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<Part>> {
        let full = self.render(messages, add_generation_prompt)?;
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message::new(m.role.clone(), format!("{MARK_OPEN}{i}{MARK_CLOSE}")))
            .collect();
        let skeleton = self.render(&marked, add_generation_prompt)?;
        for trim in [false, true] {
            let parts = split_marked(&skeleton, messages, trim);
            let joined: String = parts.iter().map(Part::text).collect();
            if joined == full {
                return Ok(parts);
            }
        }
        Err(Error::Input(
            "chat template: it changes message contents in a way that cannot be located in its \
             output, so the prompt cannot be encoded with message text taken literally"
                .into(),
        ))
    }
}

/// A piece of a rendered chat prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text the template wrote (turn markers etc.): special-token text is recognized.
    Template(String),
    /// A message's content: tokenized literally.
    Content(String),
}

impl Part {
    /// The text of the piece.
    pub fn text(&self) -> &str {
        match self {
            Part::Template(s) | Part::Content(s) => s,
        }
    }
}

fn split_marked(skeleton: &str, messages: &[Message], trim: bool) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = skeleton;
    while let Some(open) = rest.find(MARK_OPEN) {
        let after = &rest[open + MARK_OPEN.len_utf8()..];
        let Some(close) = after.find(MARK_CLOSE) else {
            break;
        };
        let Some(msg) = after[..close]
            .parse::<usize>()
            .ok()
            .and_then(|i| messages.get(i))
        else {
            break;
        };
        if open > 0 {
            parts.push(Part::Template(rest[..open].to_string()));
        }
        let content = if trim {
            msg.content.trim()
        } else {
            &msg.content
        };
        parts.push(Part::Content(content.to_string()));
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        parts.push(Part::Template(rest.to_string()));
    }
    parts
}

/// Token ids of `text` with no special-token matching at all: `<|im_start|>` typed as text
/// becomes ordinary pieces, never the control token.
pub fn encode_literal(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    use tokenizers::{Model, Normalizer, OffsetType, PreTokenizedString, PreTokenizer};
    let inner = tok.inner();
    let e = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    let mut pre = PreTokenizedString::from(text);
    if let Some(n) = inner.get_normalizer() {
        pre.normalize(|s| n.normalize(s)).map_err(e)?;
    }
    if let Some(p) = inner.get_pre_tokenizer() {
        p.pre_tokenize(&mut pre).map_err(e)?;
    }
    pre.tokenize(|s| inner.get_model().tokenize(s.get()))
        .map_err(e)?;
    Ok(pre
        .into_encoding(None, 0, OffsetType::Char)
        .map_err(e)?
        .get_ids()
        .to_vec())
}

/// Prompt ids for a conversation: added-token text (`<|im_start|>`, ...) is recognized only where
/// the template wrote it, never inside a message's content (the forge-proof encoding for chat).
///
/// The text between two recognized tokens (template text and contents together) is encoded in
/// one piece, exactly as the reference libraries encode the whole rendered string, so a
/// conversation without forged markers gets the ids `encode(render(...))` gives.
pub fn prompt_ids(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<Vec<u32>> {
    let mut added: Vec<(String, u32)> = tok
        .inner()
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| !t.content.is_empty())
        .map(|(id, t)| (t.content, id))
        .collect();
    // Longest first, so that among tokens starting at the same place the longest wins.
    added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    let mut ids = Vec::new();
    let mut raw = String::new();
    let flush = |raw: &mut String, ids: &mut Vec<u32>| -> Result<()> {
        if !raw.is_empty() {
            ids.extend(encode_literal(tok, raw)?);
            raw.clear();
        }
        Ok(())
    };
    for part in template.render_parts(messages, add_generation_prompt)? {
        let text = match part {
            Part::Content(c) => {
                raw.push_str(&c);
                continue;
            }
            Part::Template(t) => t,
        };
        let mut rest = text.as_str();
        while let Some((at, len, id)) = first_added(rest, &added) {
            raw.push_str(&rest[..at]);
            flush(&mut raw, &mut ids)?;
            ids.push(id);
            rest = &rest[at + len..];
        }
        raw.push_str(rest);
    }
    flush(&mut raw, &mut ids)?;
    Ok(ids)
}

/// The earliest added token in `text` (longest on ties): (byte offset, byte length, id).
fn first_added(text: &str, added: &[(String, u32)]) -> Option<(usize, usize, u32)> {
    let mut best: Option<(usize, usize, u32)> = None;
    for (content, id) in added {
        if let Some(at) = text.find(content.as_str()) {
            if best.is_none_or(|b| at < b.0) {
                best = Some((at, content.len(), *id));
            }
        }
    }
    best
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(format)`: the current UTC time formatted with the common `strftime` codes.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    extras::strftime(secs, &format)
}

/// `tojson`: Python `json.dumps(x, ensure_ascii=False, indent=...)`, as transformers defines it.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    extras::python_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(Value::from_safe_string(out))
}
