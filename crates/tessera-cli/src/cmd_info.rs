//! `tessera info FILE` (what a model file holds) and `tessera info --system` (what this CPU offers).

use anyhow::{bail, Context, Result};
use clap::Args;
use tessera::weights::Gguf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A `.gguf` file, a model directory, or a known model name.
    #[arg(required_unless_present = "system")]
    model: Option<String>,
    /// Print the CPU features the kernels can use instead.
    #[arg(long, conflicts_with = "model")]
    system: bool,
    /// List every metadata key (long arrays are summarized either way).
    #[arg(long)]
    all: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    if a.system {
        print_system();
        return Ok(());
    }
    let spec = a.model.unwrap_or_default();
    let path = tessera::hub::resolve(&spec)?;
    if path.is_dir() {
        return print_dir(&path);
    }
    let g = Gguf::open(&path)?;
    print_gguf(&g, a.all)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn print_gguf(g: &Gguf, all: bool) -> Result<()> {
    let arch = g.architecture()?.unwrap_or("(unknown)").to_string();
    println!("file:            {}", g.path().display());
    println!(
        "format:          GGUF v{}, {}, alignment {}",
        g.version(),
        human_bytes(g.file_size() as u64),
        g.alignment()
    );
    if let Some(name) = g.get_str("general.name")? {
        println!("name:            {name}");
    }
    println!("architecture:    {arch}");
    let params = g.parameter_count();
    println!("parameters:      {} ({params})", human_count(params));
    let types: Vec<String> = g
        .type_counts()
        .iter()
        .map(|(t, n)| format!("{t} × {n}"))
        .collect();
    println!(
        "tensors:         {} ({})",
        g.tensor_infos().len(),
        types.join(", ")
    );
    let key = |k: &str| format!("{arch}.{k}");
    let num = |k: &str| -> Result<Option<String>> { Ok(g.get(&key(k)).map(|v| v.to_string())) };
    match num("context_length")? {
        Some(c) => println!("context length:  {c}"),
        None => println!("context length:  (not stated)"),
    }
    let shape: Vec<String> = [
        ("embedding", "embedding_length"),
        ("layers", "block_count"),
        ("heads", "attention.head_count"),
        ("kv heads", "attention.head_count_kv"),
        ("feed-forward", "feed_forward_length"),
        ("rope theta", "rope.freq_base"),
        ("norm eps", "attention.layer_norm_rms_epsilon"),
    ]
    .iter()
    .filter_map(|(label, k)| num(k).ok().flatten().map(|v| format!("{label} {v}")))
    .collect();
    if !shape.is_empty() {
        println!("shape:           {}", shape.join(", "));
    }
    if let Some(model) = g.get_str("tokenizer.ggml.model")? {
        let n = g
            .get_array("tokenizer.ggml.tokens")?
            .map(|a| a.len())
            .unwrap_or(0);
        let pre = g.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let id = |k: &str| {
            g.get(&format!("tokenizer.ggml.{k}_token_id"))
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "tokenizer:       {model} (pre-tokenizer {pre}), {n} tokens, bos {} eos {} pad {}",
            id("bos"),
            id("eos"),
            id("padding")
        );
    }
    if let Some(t) = g.get_str("tokenizer.chat_template")? {
        println!("chat template:   {} characters", t.len());
    }
    println!("metadata:        {} keys", g.metadata().len());
    for (k, v) in g.metadata() {
        let main = k.starts_with("general.") || k.starts_with(&format!("{arch}."));
        if all || main {
            println!("  {k} = {}", v.summary(60));
        }
    }
    if !all {
        println!("  (--all lists the tokenizer keys too)");
    }
    Ok(())
}

fn print_dir(dir: &std::path::Path) -> Result<()> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        bail!(
            "{}: a directory without config.json (info reads GGUF files and Hugging Face model directories)",
            dir.display()
        );
    }
    let text = tessera::error::read_text(&cfg_path)?;
    let cfg: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", cfg_path.display()))?;
    println!("directory:       {}", dir.display());
    let s = |k: &str| cfg.get(k).map(|v| v.to_string());
    if let Some(a) = cfg.get("architectures") {
        println!("architecture:    {a}");
    }
    for (label, k) in [
        ("model type", "model_type"),
        ("context length", "max_position_embeddings"),
        ("hidden size", "hidden_size"),
        ("layers", "num_hidden_layers"),
        ("heads", "num_attention_heads"),
        ("vocabulary", "vocab_size"),
    ] {
        if let Some(v) = s(k) {
            println!("{:<17}{v}", format!("{label}:"));
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    files.sort();
    println!("files:");
    for (name, len) in files {
        println!("  {name} ({})", human_bytes(len));
    }
    Ok(())
}

/// The SIMD features of this CPU that matter to the kernels, detected at run time.
fn simd_features() -> Vec<(&'static str, bool)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, bool)> = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        v.push(("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")));
        v.push(("avx", std::arch::is_x86_feature_detected!("avx")));
        v.push(("avx2", std::arch::is_x86_feature_detected!("avx2")));
        v.push(("fma", std::arch::is_x86_feature_detected!("fma")));
        v.push(("f16c", std::arch::is_x86_feature_detected!("f16c")));
        v.push(("avx512f", std::arch::is_x86_feature_detected!("avx512f")));
        v.push(("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")));
        v.push(("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")));
        v.push((
            "avx512vnni",
            std::arch::is_x86_feature_detected!("avx512vnni"),
        ));
        v.push(("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")));
        // Leaf 7: AVX-512 BF16 (subleaf 1 EAX bit 5), FP16 (EDX bit 23), AMX BF16/TILE/INT8
        // (EDX bits 22, 24, 25) — read from CPUID, as std does not detect all of them.
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::__cpuid_count;
            let l7 = __cpuid_count(7, 0);
            let l7s1 = __cpuid_count(7, 1);
            v.push(("avx512bf16", (l7s1.eax >> 5) & 1 == 1));
            v.push(("avx512fp16", (l7.edx >> 23) & 1 == 1));
            v.push(("amx-bf16", (l7.edx >> 22) & 1 == 1));
            v.push(("amx-tile", (l7.edx >> 24) & 1 == 1));
            v.push(("amx-int8", (l7.edx >> 25) & 1 == 1));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push(("neon", std::arch::is_aarch64_feature_detected!("neon")));
        v.push((
            "dotprod",
            std::arch::is_aarch64_feature_detected!("dotprod"),
        ));
        v.push(("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")));
    }
    v
}

fn print_system() {
    use tessera::util::cpu;
    println!("cpu:             {}", cpu::model_name());
    println!("arch:            {}", std::env::consts::ARCH);
    println!("os:              {}", std::env::consts::OS);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("threads:         {cores} available");
    let world = tessera::dist::world();
    let layout = tessera::dist::Layout::from_env();
    println!(
        "ranks:           {} ({}; {} on this node, launcher {})",
        world.size(),
        world.name(),
        layout.local_size,
        layout.launcher.unwrap_or("none")
    );
    println!(
        "threads/rank:    {} (--threads or RAYON_NUM_THREADS; by default the node's cores \
         shared by its ranks)",
        rayon::current_num_threads()
    );
    let feats = simd_features();
    let have: Vec<&str> = feats.iter().filter(|f| f.1).map(|f| f.0).collect();
    let lack: Vec<&str> = feats.iter().filter(|f| !f.1).map(|f| f.0).collect();
    println!(
        "simd:            {}",
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(" ")
        }
    );
    if !lack.is_empty() {
        println!("simd (absent):   {}", lack.join(" "));
    }
    let caches = cpu::caches();
    if caches.is_empty() {
        println!("caches:          unknown");
    }
    for c in &caches {
        println!(
            "cache:           L{} {:<11} {:>8} (shared by cpus {})",
            c.level,
            c.kind.to_lowercase(),
            cpu::human_size(c.bytes),
            c.shared_with
        );
    }
    let level = tessera::kernels::quant::SimdLevel::detect();
    println!(
        "kernels:         {} (quantized products; TESSERA_SIMD caps it)",
        level.name()
    );
    println!(
        "weight layout:   {}",
        if level == tessera::kernels::quant::SimdLevel::Avx512Vnni {
            "Q4_0/Q4_1/Q8_0 interleaved by 16 rows at load (broadcast kernel); other types as stored"
        } else {
            "as stored (GGUF rows)"
        }
    );
    println!(
        "prefill:         int8 products below {} rows, dequantized tiles × f32 GEMM (gemm crate, \
         its own run-time dispatch) from there",
        tessera::kernels::quant::matmul::F32_GEMM_MIN_ROWS
    );
    println!(
        "cache attention: {}",
        tessera::kernels::cache_attention::F16Kernels::describe()
    );
}
