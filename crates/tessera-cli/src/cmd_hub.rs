//! `tessera pull NAME` (fetch a known model into the cache) and `tessera list` (what is cached).

use anyhow::Result;
use clap::Args;
use tessera::hub;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Known model names (see `tessera list`).
    #[arg(required_unless_present = "all")]
    names: Vec<String>,
    /// Every known model.
    #[arg(long, conflicts_with = "names")]
    all: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {}

/// Fetch each named model that is not cached yet (safe to run from several processes at once:
/// each model is downloaded once); print what each name resolves to, one per line.
pub fn run_pull(a: PullArgs) -> Result<()> {
    let models: Vec<&hub::KnownModel> = if a.all {
        hub::KNOWN_MODELS.iter().collect()
    } else {
        a.names
            .iter()
            .map(|n| {
                hub::known(n).ok_or_else(|| {
                    let names: Vec<&str> = hub::KNOWN_MODELS.iter().map(|m| m.name).collect();
                    anyhow::anyhow!("unknown model '{n}' (known: {})", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let cache = hub::Hub::from_env()?;
    for m in models {
        let pulled = cache.pull(m)?;
        if !pulled.fetched {
            eprintln!("{} is already cached", m.name);
        }
        println!("{}", pulled.path.display());
    }
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
