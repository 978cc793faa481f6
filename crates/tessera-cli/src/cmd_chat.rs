//! `tessera chat`: an interactive terminal chat, or one answer to stdin when it is not a terminal.

use crate::cmd_generate::SamplingArgs;
use anyhow::Result;
use clap::Args;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::atomic::Ordering;
use tessera::generate::chat::ChatSession;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// A known model name (fetched on first use), a .gguf file, or a model directory.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// A LoRA adapter directory (adapter_config.json + adapter_model.safetensors, PEFT's layout)
    /// merged into the model's weights after loading; refused if trained on another model.
    #[arg(long, value_name = "DIR")]
    adapter: Option<std::path::PathBuf>,
    /// System prompt (default: the template's own).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run(a: ChatArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let path = tessera::hub::resolve(&a.model)?;
    let (model, tok) = tessera::generate::load_with_adapter(&path, &a.model, a.adapter.as_deref())?;
    let mut chat = ChatSession::new(&model, &tok, a.system.clone())?;
    let stop = crate::interrupt_flag();
    let stdin = std::io::stdin();

    if !stdin.is_terminal() {
        // Piped input: one user message, print only the answer.
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            anyhow::bail!("no input on stdin");
        }
        let mut out = std::io::stdout().lock();
        chat.send(text, &params, |piece| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
            !stop.load(Ordering::SeqCst)
        })?;
        writeln!(out)?;
        return Ok(());
    }

    let adapter = match &a.adapter {
        Some(d) => format!(" + adapter {}", d.display()),
        None => String::new(),
    };
    eprintln!(
        "tessera chat — {}{adapter} ({} layers, context {}, {}). /reset clears the conversation, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.",
        a.model,
        model.cfg.num_layers,
        model.cfg.max_position_embeddings,
        model.describe()
    );
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("\n> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        let msg = line.trim();
        stop.store(false, Ordering::SeqCst);
        match msg {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        let t0 = std::time::Instant::now();
        let mut out = std::io::stdout().lock();
        let reply = chat.send(msg, &params, |piece| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
            !stop.load(Ordering::SeqCst)
        });
        writeln!(out)?;
        match reply {
            Ok(r) => {
                if r.dropped_turns > 0 {
                    eprintln!(
                        "(dropped the {} oldest messages to fit the context)",
                        r.dropped_turns
                    );
                }
                let n = r.generation.ids.len();
                let secs = t0.elapsed().as_secs_f64().max(1e-9);
                let stopped = if stop.load(Ordering::SeqCst) {
                    ", stopped"
                } else {
                    ""
                };
                eprintln!("[{n} tokens, {:.1} tok/s{stopped}]", n as f64 / secs);
            }
            Err(e) => eprintln!("error: {e}"),
        }
        stop.store(false, Ordering::SeqCst);
    }
    Ok(())
}
