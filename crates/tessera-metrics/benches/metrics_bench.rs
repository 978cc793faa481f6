//! Corpus BLEU, chrF and ROUGE-L over the benchmark corpus (100,000 segment pairs made by
//! `scripts/metrics/make_bench_data.py`), single-threaded and on all cores; prints medians.
//!
//! `cargo bench -p tessera-metrics --bench metrics_bench`
//! Environment: `TESSERA_METRICS_BENCH_DIR` (default `target/metrics-bench` at the workspace
//! root), `TESSERA_METRICS_BENCH_REPEAT` (default 5), `TESSERA_METRICS_BENCH_THREADS` (comma-separated
//! thread counts, default `1,0`; 0 = all cores), `TESSERA_METRICS_BENCH_JSON` (write results).

use std::time::Instant;

use tessera_metrics::bleu::Bleu;
use tessera_metrics::chrf::Chrf;
use tessera_metrics::rouge::{mean_scores, Rouge, RougeType};

/// A named benchmark body returning the metric's value.
type Case<'a> = (&'static str, Box<dyn Fn() -> f64 + 'a>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn main() {
    let dir = std::env::var("TESSERA_METRICS_BENCH_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/metrics-bench").to_string()
    });
    let repeat: usize = std::env::var("TESSERA_METRICS_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let read = |name: &str| {
        let p = format!("{dir}/{name}");
        std::fs::read_to_string(&p).unwrap_or_else(|e| {
            eprintln!("cannot read {p} ({e}); run scripts/metrics/make_bench_data.py first");
            std::process::exit(2)
        })
    };
    let (ht, rt) = (read("hyp.txt"), read("ref.txt"));
    let hyps: Vec<&str> = tessera_metrics::input::split_lines(&ht);
    let refs: Vec<Vec<&str>> = tessera_metrics::input::split_lines(&rt)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "{} segment pairs, {repeat} runs each, {cores} cores",
        hyps.len()
    );
    let mut results = Vec::new();
    let thread_counts: Vec<usize> = std::env::var("TESSERA_METRICS_BENCH_THREADS")
        .unwrap_or_else(|_| "1,0".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    for threads in thread_counts {
        let used = if threads == 0 { cores } else { threads };
        let label = if used == 1 {
            "1 thread".to_string()
        } else {
            format!("{used} threads")
        };
        let cases: Vec<Case> = vec![
            (
                "bleu",
                Box::new(|| {
                    Bleu {
                        threads,
                        ..Bleu::default()
                    }
                    .corpus_score(&hyps, &refs)
                    .expect("bleu")
                    .score
                }),
            ),
            (
                "chrf",
                Box::new(|| {
                    Chrf {
                        threads,
                        ..Chrf::default()
                    }
                    .corpus_score(&hyps, &refs)
                    .expect("chrf")
                    .score
                }),
            ),
            (
                "rougeL",
                Box::new(|| {
                    let m = Rouge {
                        types: vec![RougeType::L],
                        use_stemmer: false,
                        threads,
                    };
                    mean_scores(&m.corpus_segments(&hyps, &refs).expect("rouge"))[0].fmeasure
                }),
            ),
        ];
        for (name, f) in cases {
            let mut times = Vec::new();
            let mut value = 0.0;
            for _ in 0..repeat {
                let t = Instant::now();
                value = f();
                times.push(t.elapsed().as_secs_f64());
            }
            let med = median(times.clone());
            println!("rust   {name:7} {label:>10}  median {med:8.4} s  value {value:.6}");
            results.push(format!(
                "{{\"metric\":\"{name}\",\"threads\":{},\"median_s\":{med},\"value\":{value}}}",
                used
            ));
        }
    }
    if let Ok(p) = std::env::var("TESSERA_METRICS_BENCH_JSON") {
        let _ = std::fs::write(p, format!("[{}]\n", results.join(",")));
    }
}
