//! `tessera summarize`: a document (or one per line) to a summary, with an encoder-decoder
//! trained for it, with an instruct decoder through its chat template, or the Lead-N baseline.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use tessera::generate::beam::Seq2SeqGenerate;
use tessera::generate::{generate, SamplingParams};
use tessera::tasks::translate::{source_ids, translate_ids};
use tessera::tokenizer::chat::Message;

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// An encoder-decoder directory (a Marian or T5 config.json), or an instruct decoder (a known
    /// name, a `.gguf` file, a Hugging Face or run directory) prompted through its chat template.
    /// Default: smollm2-135m-instruct.
    #[arg(long, default_value = "smollm2-135m-instruct", conflicts_with = "lead")]
    model: String,
    /// No model: the first N sentences of each document (the Lead-N baseline).
    #[arg(long)]
    lead: Option<usize>,
    /// Read from this file instead of standard input.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Each input line is a document; one summary line out per line in (for `tessera eval
    /// rouge`). Default: the whole input is one document.
    #[arg(long)]
    lines: bool,
    /// Instruct decoders: the summary's length asked for, in sentences.
    #[arg(long, default_value_t = 3)]
    sentences: usize,
    /// Tokens generated per summary at most.
    #[arg(long, default_value_t = 160)]
    max_new_tokens: usize,
    /// Encoder-decoders: beam size (1 = greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Encoder-decoders: text put before each document (T5's `summarize: `). Default: the
    /// model's own summarization prefix (`task_specific_params.summarization.prefix` in its
    /// config.json, as transformers' summarization pipeline reads it), else none; `--prefix ''`
    /// turns it off.
    #[arg(long)]
    prefix: Option<String>,
}

/// Split text into sentences: a `.`, `!` or `?` (with closing quotes or brackets) followed by
/// whitespace ends one. Good enough for Lead-N on news prose; abbreviations may split early.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (_, ch) = chars[i];
        if matches!(ch, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            if j == chars.len() || chars[j].1.is_whitespace() {
                let end = chars.get(j).map_or(text.len(), |c| c.0);
                let s = text[start..end].trim();
                if !s.is_empty() {
                    out.push(s);
                }
                start = end;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

enum Summarizer {
    Lead(usize),
    /// The model, its tokenizer and the prefix put before each document.
    Seq2Seq(
        Box<(
            tessera::models::seq2seq::Seq2Seq,
            tessera::tokenizer::Tokenizer,
            String,
        )>,
    ),
    Instruct(
        Box<(
            tessera::infer::Decoder,
            tessera::tokenizer::chat::ModelTokenizer,
        )>,
    ),
}

fn is_seq2seq_dir(p: &Path) -> bool {
    let cfg = p.join("config.json");
    cfg.is_file()
        && std::fs::read_to_string(&cfg)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["model_type"] == "marian" || v["model_type"] == "t5")
}

impl Summarizer {
    fn summarize(&self, doc: &str, a: &SummarizeArgs) -> Result<String> {
        let doc = doc.trim();
        if doc.is_empty() {
            return Ok(String::new());
        }
        Ok(match self {
            Summarizer::Lead(n) => sentences(doc)
                .into_iter()
                .take(*n)
                .collect::<Vec<_>>()
                .join(" "),
            Summarizer::Seq2Seq(b) => {
                let (model, tok, prefix) = &**b;
                let eos = model.cfg.eos()?;
                let max = model.cfg.encoder.max_position_embeddings;
                let mut ids = source_ids(tok, &format!("{prefix}{doc}"), eos)?;
                if ids.len() > max {
                    eprintln!(
                        "warning: a document of {} tokens cut to the model's {max}",
                        ids.len()
                    );
                    ids.truncate(max - 1);
                    ids.push(eos);
                }
                let opts = Seq2SeqGenerate {
                    num_beams: a.beam.max(1),
                    max_new_tokens: a.max_new_tokens,
                    ..Default::default()
                };
                let h = translate_ids(model, &[&ids], &opts, 1)?;
                tok.decode_text(h[0][0].content(eos))?
            }
            Summarizer::Instruct(b) => {
                let (model, tok) = &**b;
                let ask = |d: &str| {
                    format!(
                        "Summarize the following text in at most {} sentences.\n\n{d}",
                        a.sentences.max(1)
                    )
                };
                let ctx = model.cfg.max_position_embeddings;
                let budget = ctx.saturating_sub(a.max_new_tokens + 1);
                let mut text = doc.to_string();
                let mut ids = tok.prompt_ids(&[Message::new("user", ask(&text))], true)?;
                if ids.len() > budget {
                    // Keep the document's beginning: cut its tokens to what the context allows.
                    let over = ids.len() - budget;
                    let doc_ids = tok.tokenizer.encode(&text)?;
                    let keep = doc_ids.len().saturating_sub(over + 8);
                    text = tok.tokenizer.decode(&doc_ids[..keep])?;
                    eprintln!(
                        "warning: a document of {} tokens cut to {keep} to fit the model's context of {ctx}",
                        doc_ids.len()
                    );
                    ids = tok.prompt_ids(&[Message::new("user", ask(&text))], true)?;
                }
                let params = SamplingParams {
                    temperature: 0.0,
                    max_tokens: a.max_new_tokens,
                    ..Default::default()
                };
                let g = generate(model, &tok.tokenizer, &ids, &params, |_| true)?;
                g.text.trim().to_string()
            }
        })
    }
}

pub fn run(a: SummarizeArgs) -> Result<()> {
    let mut text = String::new();
    match &a.input {
        Some(p) => {
            text = tessera::error::read_text(p)?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
        }
    }
    let s = if let Some(n) = a.lead {
        if n == 0 {
            bail!("--lead needs at least 1 sentence");
        }
        Summarizer::Lead(n)
    } else {
        let path = tessera::hub::resolve(&a.model)?;
        if path.is_dir() && is_seq2seq_dir(&path) {
            let (m, t) = crate::cmd_seq2seq::load_seq2seq(&path)?;
            let prefix = match &a.prefix {
                Some(p) => p.clone(),
                None => crate::cmd_seq2seq::task_prefix(&path, "summarization").unwrap_or_default(),
            };
            Summarizer::Seq2Seq(Box::new((m, t, prefix)))
        } else {
            let (m, t) = tessera::generate::load(&path)?;
            if t.template().is_err() {
                bail!(
                    "{}: a decoder without a chat template cannot be asked to summarize; give an \
                     instruct model or an encoder-decoder",
                    path.display()
                );
            }
            Summarizer::Instruct(Box::new((m, t)))
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    if a.lines {
        for line in text.lines() {
            let summary = s.summarize(line, &a)?;
            writeln!(out, "{}", summary.replace('\n', " "))?;
            out.flush()?;
        }
    } else {
        writeln!(out, "{}", s.summarize(&text, &a)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn splits_sentences_for_lead_n() {
        assert_eq!(
            sentences("The cat sat. It was \"happy.\" Was it? Yes! 3.5 percent rose"),
            [
                "The cat sat.",
                "It was \"happy.\"",
                "Was it?",
                "Yes!",
                "3.5 percent rose"
            ]
        );
        assert!(sentences("  ").is_empty());
    }
}
