//! Prometheus metrics (text exposition format): request and token counters, queue depth, active
//! sequences, and histograms of time to first token and per-request decode speed.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, x: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in self.bounds.iter().enumerate() {
            if x <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += x;
        g.2 += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&g.0) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", g.2);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", g.1, g.2);
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    pub requests: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: Counter,
    pub cached_prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub cancelled: Counter,
    pub rejected_busy: Counter,
    pub queue_depth: AtomicU64,
    pub active: AtomicU64,
    pub ttft: Histogram,
    pub decode_rate: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            prompt_tokens: Counter::default(),
            cached_prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            cancelled: Counter::default(),
            rejected_busy: Counter::default(),
            queue_depth: AtomicU64::new(0),
            active: AtomicU64::new(0),
            ttft: Histogram::new(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            decode_rate: Histogram::new(&[1.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]),
        }
    }
}

impl Metrics {
    /// Count a finished HTTP request.
    pub fn request(&self, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), status)).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP tessera_requests_total HTTP requests by route and status.\n# TYPE tessera_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tessera_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        for (name, help, v) in [
            (
                "tessera_prompt_tokens_total",
                "Prompt tokens received.",
                self.prompt_tokens.get(),
            ),
            (
                "tessera_prompt_tokens_cached_total",
                "Prompt tokens reused from the prefix cache.",
                self.cached_prompt_tokens.get(),
            ),
            (
                "tessera_generation_tokens_total",
                "Tokens generated.",
                self.generation_tokens.get(),
            ),
            (
                "tessera_cancelled_total",
                "Sequences cancelled (client gone).",
                self.cancelled.get(),
            ),
            (
                "tessera_rejected_busy_total",
                "Requests answered 429 (queue full).",
                self.rejected_busy.get(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, v) in [
            (
                "tessera_queue_depth",
                "Choices waiting for a sequence slot.",
                &self.queue_depth,
            ),
            (
                "tessera_active_sequences",
                "Sequences in the running batch.",
                &self.active,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.ttft.render(
            "tessera_time_to_first_token_seconds",
            "Time from a request's arrival to its first token.",
            &mut out,
        );
        self.decode_rate.render(
            "tessera_decode_tokens_per_second",
            "Decode speed of each finished choice.",
            &mut out,
        );
        out
    }
}
