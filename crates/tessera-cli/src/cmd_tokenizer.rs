//! `tessera tokenizer ...`

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tessera::tokenizer::Tokenizer;

#[derive(Subcommand, Debug)]
pub enum TokenizerCmd {
    /// Train a byte-level BPE tokenizer (with the special tokens a chat/LM model needs).
    Train(TrainTokArgs),
}

#[derive(Args, Debug)]
pub struct TrainTokArgs {
    /// UTF-8 text files to learn from.
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Where to write tokenizer.json.
    #[arg(long, default_value = "tokenizer.json")]
    out: PathBuf,
}

pub fn run(cmd: TokenizerCmd) -> Result<()> {
    match cmd {
        TokenizerCmd::Train(a) => {
            let mut texts = Vec::new();
            for p in &a.data {
                let t = tessera::error::read_text(p)?;
                if t.is_empty() {
                    anyhow::bail!("{}: the file is empty", p.display());
                }
                texts.push(t);
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tok = Tokenizer::train_bpe(&refs, a.vocab_size)?;
            tok.save(&a.out)
                .with_context(|| format!("writing {}", a.out.display()))?;
            eprintln!("wrote {} ({} tokens)", a.out.display(), tok.vocab_size());
            Ok(())
        }
    }
}
