//! A model's tokenizer with its chat template, from a GGUF file or a Hugging Face directory.

use super::{ChatTemplate, Message};
use crate::tokenizer::gguf::GgufTokenizer;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// What a chat or tokenize command needs from a model: its tokenizer, template and special ids.
#[derive(Debug)]
pub struct ModelTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The model's chat template, if it has one.
    pub template: Option<ChatTemplate>,
    /// Beginning-of-sequence id.
    pub bos_id: Option<u32>,
    /// End-of-sequence id.
    pub eos_id: Option<u32>,
    /// Whether sequences should start with BOS.
    pub add_bos: bool,
}

/// A `tokenizer_config.json` token entry: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ModelTokenizer {
    /// Load from a `.gguf` file or a model directory (`tokenizer.json`, and the chat template
    /// and special tokens of `tokenizer_config.json` when present; a run directory's
    /// `checkpoint/` is looked into).
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_file() {
            let g = GgufTokenizer::open(path)?;
            let template = match &g.chat_template {
                Some(src) => Some(ChatTemplate::new(
                    src,
                    &g.bos_token().unwrap_or_default(),
                    &g.eos_token().unwrap_or_default(),
                )?),
                None => None,
            };
            return Ok(ModelTokenizer {
                tokenizer: g.tokenizer,
                template,
                bos_id: g.bos_id,
                eos_id: g.eos_id,
                add_bos: g.add_bos,
            });
        }
        let dir = if path.join("tokenizer.json").is_file() {
            path.to_path_buf()
        } else {
            crate::hub::model_dir(path)?
        };
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.is_file() {
            let text = crate::error::read_text(&cfg_path)?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Input(format!("{}: {e}", cfg_path.display())))?
        } else {
            Value::Null
        };
        let bos = token_text(cfg.get("bos_token"));
        let eos = token_text(cfg.get("eos_token"));
        let source = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one called "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let template = match source {
            Some(s) => Some(ChatTemplate::new(
                &s,
                bos.as_deref().unwrap_or(""),
                eos.as_deref().unwrap_or(""),
            )?),
            None => None,
        };
        Ok(ModelTokenizer {
            bos_id: bos.as_deref().and_then(|t| tokenizer.token_id(t)),
            eos_id: eos
                .as_deref()
                .and_then(|t| tokenizer.token_id(t))
                .or(tokenizer.eos_id()),
            add_bos: cfg
                .get("add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tokenizer,
            template,
        })
    }

    /// The chat template, or an error saying the model has none.
    pub fn template(&self) -> Result<&ChatTemplate> {
        self.template
            .as_ref()
            .ok_or_else(|| Error::Input("this model has no chat template".into()))
    }

    /// Forge-proof prompt ids for `messages` (see [`super::prompt_ids`]), with BOS first when
    /// the model asks for it and the template did not write it.
    pub fn prompt_ids(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let mut ids = super::prompt_ids(
            &self.tokenizer,
            self.template()?,
            messages,
            add_generation_prompt,
        )?;
        self.with_bos(&mut ids);
        Ok(ids)
    }

    /// Put BOS first when the model asks for it and `ids` do not start with it already.
    pub fn with_bos(&self, ids: &mut Vec<u32>) {
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
    }
}
