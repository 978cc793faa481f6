//! `tessera export`: a GGUF model with a LoRA adapter merged into its weights, or re-quantized.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tessera::models::gguf_loader::config_from_gguf;
use tessera::models::gguf_merge::{export_gguf, parse_type};
use tessera::models::lora::Adapter;
use tessera::weights::Gguf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The base model: a `.gguf` file or a known model name (fetched on first use).
    #[arg(long)]
    model: String,
    /// A LoRA adapter directory (adapter_config.json + adapter_model.safetensors, PEFT's layout)
    /// to merge into the weights; refused if trained on another model. Without it the model is
    /// only converted (see --type), or, without --type too, copied.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// The GGUF file to write (atomically).
    #[arg(long)]
    out: PathBuf,
    /// Write every matrix (embeddings included) in this type: f32, f16, bf16, q8_0, q5_0, q5_1,
    /// q4_0, q4_1. Default: the merged projections keep their source type, every other tensor
    /// is copied as it is.
    #[arg(long = "type", value_name = "TYPE")]
    qtype: Option<String>,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let qtype = a.qtype.as_deref().map(parse_type).transpose()?;
    let path = tessera::hub::resolve(&a.model)?;
    if !path.is_file() {
        bail!(
            "{}: export reads a GGUF file; this is a directory",
            path.display()
        );
    }
    let src = Gguf::open(&path)?;
    let cfg = config_from_gguf(&src)?;
    let adapter = match &a.adapter {
        Some(dir) => Some(Adapter::load(dir, &a.model, &cfg)?),
        None => None,
    };
    let t0 = std::time::Instant::now();
    let s = export_gguf(&src, adapter.as_ref(), qtype, &a.out)?;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    let mut what = Vec::new();
    if let Some(ad) = &adapter {
        what.push(format!(
            "{} projections merged with the adapter (rank {}, {}; written as {})",
            s.merged,
            ad.lora.rank,
            ad.lora.targets.join(","),
            qtype.map_or("their source types".to_string(), |t| t.to_string())
        ));
    }
    if let Some(t) = qtype {
        let n = s.converted;
        what.push(format!(
            "{n} other tensor{} converted to {t}",
            if n == 1 { "" } else { "s" }
        ));
    }
    what.push(format!("{} copied as they were", s.copied));
    eprintln!(
        "wrote {} ({:.1} MB, {:.1} s): {}",
        a.out.display(),
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64(),
        what.join(", ")
    );
    Ok(())
}
