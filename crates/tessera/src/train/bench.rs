//! Training throughput benchmark on the reference model of the peers' `train_gpt_torch.py` (GPT-2
//! layout), or its Llama variant in `scripts/train_torch.py --arch llama` (RMSNorm, rotary,
//! grouped-query attention, SwiGLU, no biases, tied head).

use super::optim::AdamW;
use super::run::{EvalAt, Micro, Objective, Observer, Plan, RunState, Shard};
use super::schedule::Schedule;
use crate::models::{ParamStore, Transformer, TransformerConfig};
use crate::util::rng::Rng;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// The benchmark's settings (same names and defaults as the PyTorch script).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchTrainOptions {
    /// `gpt2` or `llama`.
    pub arch: String,
    /// Llama: key/value heads (`None`: half the query heads, at least 1).
    pub n_kv_head: Option<usize>,
    /// Llama: the SwiGLU width.
    pub n_inner: usize,
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub dropout: f32,
    pub bias: bool,
    pub steps: usize,
    pub warmup: usize,
    pub seed: u64,
}

impl Default for BenchTrainOptions {
    fn default() -> Self {
        BenchTrainOptions {
            arch: "gpt2".into(),
            n_kv_head: None,
            n_inner: 704,
            rope_theta: 10000.0,
            vocab_size: 4096,
            n_layer: 4,
            n_head: 4,
            n_embd: 256,
            block_size: 128,
            batch_size: 16,
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay: 0.1,
            grad_clip: 0.0,
            dropout: 0.0,
            bias: true,
            steps: 20,
            warmup: 3,
            seed: 0,
        }
    }
}

/// What the benchmark measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchTrainResult {
    pub params: usize,
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    pub final_loss: f64,
    pub steps: usize,
    /// Ranks of a data-parallel run (1: one process), and the mean time per timed step spent
    /// summing gradients across them.
    pub ranks: usize,
    pub allreduce_ms_per_step: f64,
}

/// The model `opts` describes.
pub fn bench_config(opts: &BenchTrainOptions) -> Result<TransformerConfig> {
    match opts.arch.as_str() {
        "gpt2" => {
            let mut cfg = TransformerConfig::from_hf_json(&serde_json::json!({
                "model_type": "gpt2", "vocab_size": opts.vocab_size, "n_embd": opts.n_embd,
                "n_layer": opts.n_layer, "n_head": opts.n_head, "n_positions": opts.block_size,
                "resid_pdrop": opts.dropout,
            }))?;
            cfg.bias = opts.bias;
            Ok(cfg)
        }
        "llama" => TransformerConfig::from_hf_json(&serde_json::json!({
            "model_type": "llama", "vocab_size": opts.vocab_size, "hidden_size": opts.n_embd,
            "num_hidden_layers": opts.n_layer, "num_attention_heads": opts.n_head,
            "num_key_value_heads": opts.n_kv_head.unwrap_or((opts.n_head / 2).max(1)),
            "intermediate_size": opts.n_inner, "max_position_embeddings": opts.block_size,
            "rms_norm_eps": 1e-5, "rope_theta": opts.rope_theta, "tie_word_embeddings": true,
            "attention_dropout": opts.dropout,
        })),
        other => Err(crate::Error::Config(format!(
            "unknown architecture '{other}' (expected gpt2 or llama)"
        ))),
    }
}

/// Train the model of `opts` on uniformly random ids with the one training loop; time `steps`
/// steps after `warmup` untimed ones.
pub fn bench_train(opts: &BenchTrainOptions) -> Result<BenchTrainResult> {
    let cfg = bench_config(opts)?;
    let device = Device::Cpu;
    let mut rng = Rng::new(opts.seed);
    let params = ParamStore::init(&cfg, &mut rng, DType::F32, &device)?;
    let model = Transformer::from_params(&cfg, &params)?;
    let mut opt = AdamW::new(&params, opts.beta1, opts.beta2, 1e-8, opts.weight_decay)?;
    let mut obj = RandomTokens {
        model: &model,
        params: &params,
        opts,
        device,
    };
    let plan = Plan {
        schedule: Schedule::Constant { lr: opts.lr },
        max_steps: opts.warmup + opts.steps,
        epochs: usize::MAX,
        grad_accum: 1,
        grad_clip: opts.grad_clip,
        eval: EvalAt::Never,
        patience: 0,
        max_time: None,
        stop: None,
        metrics: None,
        comm: crate::dist::world(),
    };
    let mut clock = Clock {
        warmup: opts.warmup,
        start: Instant::now(),
        last_loss: f64::NAN,
        comm_seconds: 0.0,
    };
    super::run::run(
        &mut obj,
        &mut opt,
        &mut rng,
        &mut RunState::default(),
        &plan,
        &mut clock,
    )?;
    let wall = clock.start.elapsed().as_secs_f64();
    let (b, t) = (opts.batch_size, opts.block_size);
    Ok(BenchTrainResult {
        params: params.num_params(),
        tokens_per_s: (b * t * opts.steps) as f64 / wall,
        ms_per_step: 1000.0 * wall / opts.steps.max(1) as f64,
        final_loss: clock.last_loss,
        steps: opts.steps,
        ranks: plan.comm.size(),
        allreduce_ms_per_step: 1000.0 * clock.comm_seconds / opts.steps.max(1) as f64,
    })
}

/// Batches of uniformly random ids (and targets), as the peers' script trains on.
struct RandomTokens<'a> {
    model: &'a Transformer,
    params: &'a ParamStore,
    opts: &'a BenchTrainOptions,
    device: Device,
}

impl Objective for RandomTokens<'_> {
    fn params(&self) -> &ParamStore {
        self.params
    }

    fn next_micro(&mut self, rng: &mut Rng, shard: Shard) -> Result<Option<Micro>> {
        let (b, t, o) = (self.opts.batch_size, self.opts.block_size, self.opts);
        let ids: Vec<u32> = (0..b * (t + 1))
            .map(|_| rng.below(o.vocab_size) as u32)
            .collect();
        // Every rank draws the whole batch; each trains on its rows.
        let rows = shard.range(b);
        let mut drop_rng = shard.dropout_rng(rng);
        if rows.is_empty() {
            return Micro::empty().map(Some);
        }
        let all =
            Tensor::from_vec(ids, (b, t + 1), &self.device)?.narrow(0, rows.start, rows.len())?;
        let x = all.narrow(1, 0, t)?.contiguous()?;
        let y = all.narrow(1, 1, t)?.contiguous()?;
        let mut d = crate::models::BlockDropout {
            hidden: o.dropout,
            attention: o.dropout,
            rng: &mut drop_rng,
        };
        let drop = if o.dropout > 0.0 { Some(&mut d) } else { None };
        Ok(Some(Micro {
            loss: self.model.loss(&x, &y, drop)?,
            items: rows.len() * t,
            terms: rows.len() * t,
        }))
    }
}

/// Starts the clock after the warm-up steps; keeps the last loss and the timed steps' time in
/// all-reduce.
struct Clock {
    warmup: usize,
    start: Instant,
    last_loss: f64,
    comm_seconds: f64,
}

impl Observer for Clock {
    fn on_step(&mut self, s: &super::StepStats) {
        if s.step == self.warmup {
            self.start = Instant::now();
        } else if s.step > self.warmup {
            self.comm_seconds += s.comm_seconds;
        }
        self.last_loss = s.loss;
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
