//! `tessera tokenize` (text to token ids) and `tessera template` (messages through the model's chat
//! template), the inspection commands llama.cpp's server offers as `/tokenize` and `/apply-template`.

use anyhow::{Context, Result};
use clap::Args;
use std::io::{Read, Write};
use std::path::PathBuf;
use tessera::tokenizer::chat::{encode_literal, Message, ModelTokenizer};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// A `.gguf` file, a model directory, or a known model name.
    #[arg(long)]
    model: String,
    /// The text (default: all of standard input, exactly as given).
    #[arg(long)]
    text: Option<String>,
    /// Print `{"ids": [...]}`.
    #[arg(long)]
    json: bool,
    /// Take special-token text (`<|im_start|>`) literally instead of as the special token.
    #[arg(long)]
    literal: bool,
}

#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// A `.gguf` file, a model directory, or a known model name.
    #[arg(long)]
    model: String,
    /// JSON file with an array of {"role", "content"} messages ("-" reads standard input).
    #[arg(long)]
    messages: PathBuf,
    /// End with the opening of the assistant's turn.
    #[arg(long)]
    add_generation_prompt: bool,
    /// Print `{"prompt": "...", "ids": [...]}`, the ids encoded with message contents taken
    /// literally (as `tessera chat` does).
    #[arg(long)]
    json: bool,
}

fn load(model: &str) -> Result<ModelTokenizer> {
    let path = tessera::hub::resolve(model)?;
    ModelTokenizer::load(&path)
        .with_context(|| format!("loading the tokenizer of {}", path.display()))
}

fn read_stdin() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "standard input is not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

pub fn run_tokenize(a: TokenizeArgs) -> Result<()> {
    let text = match a.text {
        Some(t) => t,
        None => read_stdin()?,
    };
    let m = load(&a.model)?;
    let ids = if a.literal {
        encode_literal(&m.tokenizer, &text)?
    } else {
        m.tokenizer.encode(&text)?
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::json!({ "ids": ids }))?;
    } else {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", s.join(" "))?;
    }
    Ok(())
}

pub fn run_template(a: TemplateArgs) -> Result<()> {
    let text = if a.messages.as_os_str() == "-" {
        read_stdin()?
    } else {
        tessera::error::read_text(&a.messages)?
    };
    let messages = Message::list_from_json(&text)
        .with_context(|| format!("reading {}", a.messages.display()))?;
    let m = load(&a.model)?;
    let prompt = m.template()?.render(&messages, a.add_generation_prompt)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let ids = m.prompt_ids(&messages, a.add_generation_prompt)?;
        writeln!(
            out,
            "{}",
            serde_json::json!({ "prompt": prompt, "ids": ids })
        )?;
    } else {
        write!(out, "{prompt}")?;
    }
    out.flush()?;
    Ok(())
}
