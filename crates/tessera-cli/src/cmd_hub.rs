//! `tessera pull NAME` (fetch a known model into the cache) and `tessera list` (what is cached).

use anyhow::{bail, Result};
use clap::Args;
use tessera::hub;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// A known model name (see `tessera list`).
    name: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run_pull(a: PullArgs) -> Result<()> {
    let Some(m) = hub::known(&a.name) else {
        let names: Vec<&str> = hub::KNOWN_MODELS.iter().map(|m| m.name).collect();
        bail!("unknown model '{}' (known: {})", a.name, names.join(", "));
    };
    let was_cached = hub::cached_path(m)?.is_some();
    let path = hub::pull(m)?;
    if was_cached {
        eprintln!("{} is already cached", m.name);
    }
    println!("{}", path.display());
    Ok(())
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

pub fn run_list(_a: ListArgs) -> Result<()> {
    let cache = hub::cache_dir()?;
    println!("cache: {}", cache.display());
    let cached = hub::list_cached()?;
    for c in &cached {
        let status = if c.complete {
            ""
        } else {
            "  (incomplete: pull it again)"
        };
        let what = c.known.map(|k| k.description).unwrap_or("local");
        println!("  {:<24} {:>10}  {what}{status}", c.name, mib(c.bytes));
    }
    let missing: Vec<&hub::KnownModel> = hub::KNOWN_MODELS
        .iter()
        .filter(|k| !cached.iter().any(|c| c.name == k.name && c.complete))
        .collect();
    if cached.is_empty() {
        println!("  (nothing cached)");
    }
    if !missing.is_empty() {
        println!("available with `tessera pull NAME`:");
        for k in missing {
            println!("  {:<24} {}", k.name, k.description);
        }
    }
    Ok(())
}
