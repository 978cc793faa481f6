//! Golden gradients, the llm.c way: PyTorch's loss, every parameter's gradient and the weights
//! after one AdamW step, for tiny GPT-2, Llama and BERT models, and tessera's for the same
//! weights and batch through the code its trainers run.
//!
//! Fixture: `fixtures/golden_grads/<arch>/` (made by `scripts/golden_grads.py`; see the README
//! there): `config.json`, `golden.json` (loss, optimizer settings, the decayed parameters,
//! versions) and `golden.safetensors` (initial weights, `grad.<name>`, `after.<name>`, the batch).
//!
//! What runs on the tessera side:
//! - GPT-2 (tied head) and Llama (GQA, untied head): `Transformer::from_params` over a
//!   `ParamStore`, `Transformer::loss` (what the LM trainer's micro-batch calls), candle autograd;
//!   the step is `train::run::optimizer_step` with `AdamW`, as `Trainer::train_step` calls it.
//! - BERT: `Classifier::logits_packed` on a packed batch + `nn::loss::cross_entropy` (what the
//!   fine-tune objective's micro-batch computes; torch ran the same sequences padded, with an
//!   attention mask), then `optimizer_step`.
//!
//! Every parameter must have a gradient, every fixture gradient must belong to a parameter, and
//! tessera's weight-decay groups must be the ones the fixture used.
//!
//! Tolerances. Both sides are f32 on the CPU; they differ in summation order and in tessera's
//! fused kernels (linear + cross-entropy, attention, gated MLP), i.e. by rounding. Observed with
//! torch 2.15.0 / transformers 5.24.0 on x86-64 (the run that made the fixture):
//!
//! | | tolerance | gpt2 | llama | bert |
//! | --- | --- | --- | --- | --- |
//! | loss, abs | 5e-6 | 4.8e-7 | 4.8e-7 | 0 |
//! | gradient, max abs | 1e-8 + 2e-5 · (max abs ref) per tensor | 1.0e-7 | 1.0e-7 | 1.5e-7 |
//! | gradient, max abs / max abs ref | (2e-5) | 8.0e-7 | 7.7e-7 | 1.7e-6 |
//! | weights after AdamW on torch's gradients | 5e-7 | 3.0e-8 | 6.0e-8 | 1.2e-7 |
//! | weights after tessera's own step | 5e-7 | 6.0e-8 | 6.0e-8 | 1.2e-7 |
//!
//! The gradient bound leaves ~10x room over the worst tensor (about 15 f32 ulps of the largest
//! entry after two layers); the weight bounds are ~4 ulps of weights of magnitude ~1.4 (a
//! first AdamW step is one multiply-add per weight). The step through tessera's own gradients
//! is compared where the step is determined by the gradient: Adam's first step moves a weight
//! by lr · g / (|g| + eps), so where the gradient is at rounding-noise level it moves by an
//! arbitrary amount up to lr. That happens to the key biases (softmax ignores a bias added to
//! every key, so their gradient is 0 in exact arithmetic; torch and tessera both report
//! ~1e-10 noise) and to a few dozen tiny entries elsewhere; see `check_step`.

use candle_core::backprop::GradStore;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tessera::models::encoder::{BlockDropout, Packed};
use tessera::models::params::{param_specs, ParamSpec};
use tessera::models::{ParamStore, Transformer, TransformerConfig};
use tessera::tasks::classify::{head_param_specs, Classifier, HeadKind};
use tessera::train::optim::AdamW;
use tessera::train::run::{optimizer_step, Micro};
use tessera::util::rng::Rng;
use tessera::weights::safetensors::load_safetensors;
use tessera::{Device, Tensor};

const LOSS_TOL: f64 = 5e-6;
const GRAD_ATOL: f64 = 1e-8;
const GRAD_RTOL: f64 = 2e-5;
const ADAM_ONLY_TOL: f64 = 5e-7;
const STEP_TOL: f64 = 5e-7;

fn fixture_dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden_grads")
        .join(arch)
}

/// One architecture's fixture.
struct Golden {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
    dir: PathBuf,
}

impl Golden {
    fn load(arch: &str) -> Self {
        let dir = fixture_dir(arch);
        let tensors = load_safetensors(&dir.join("golden.safetensors"), &Device::Cpu).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        Golden { tensors, meta, dir }
    }

    fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks '{name}'"))
    }

    /// An int64 input tensor as u32 ids.
    fn ids(&self, name: &str) -> Tensor {
        let t = self.get(name);
        let v: Vec<u32> = t
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| u32::try_from(x).unwrap())
            .collect();
        Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap()
    }

    fn opt(&self, key: &str) -> f64 {
        self.meta["optimizer"][key].as_f64().unwrap()
    }

    /// Number of classes of the classification head.
    fn meta_labels(&self) -> usize {
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("config.json")).unwrap())
                .unwrap();
        cfg["id2label"].as_object().unwrap().len()
    }

    fn loss(&self) -> f64 {
        self.get("loss").to_scalar::<f32>().unwrap() as f64
    }

    /// A trainable store of `specs` holding the fixture's initial weights.
    fn store(&self, specs: Vec<ParamSpec>) -> ParamStore {
        let vars = specs
            .iter()
            .map(|s| {
                let t = self.get(&s.name);
                assert_eq!(t.dims(), s.shape.as_slice(), "{}: shape", s.name);
                candle_core::Var::from_tensor(&t.copy().unwrap()).unwrap()
            })
            .collect();
        ParamStore { specs, vars }
    }

    /// tessera's parameters are exactly torch's (same names, none missing, none extra) and
    /// its weight-decay groups are the ones torch's AdamW used.
    fn check_parameter_sets(&self, specs: &[ParamSpec]) {
        let ours: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let grads: BTreeSet<&str> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("grad."))
            .collect();
        let listed: BTreeSet<&str> = self.meta["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            ours, grads,
            "tessera's parameters vs the fixture's gradients"
        );
        assert_eq!(ours, listed, "tessera's parameters vs torch's");
        let decayed: BTreeSet<&str> = specs
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect();
        let torch_decayed: BTreeSet<&str> = self.meta["decay"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(decayed, torch_decayed, "weight-decay groups");
    }
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// max |a - b| and max |b|.
fn max_diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let mut d = 0f64;
    let mut m = 0f64;
    for (x, y) in a.iter().zip(&b) {
        d = d.max((*x as f64 - *y as f64).abs());
        m = m.max((*y as f64).abs());
    }
    (d, m)
}

/// Compare every parameter's gradient with the fixture's; returns the worst absolute
/// difference and the worst difference relative to the tensor's largest reference entry.
fn check_grads(arch: &str, g: &Golden, params: &ParamStore, store: &GradStore) -> (f64, f64) {
    let (mut worst_abs, mut worst_rel) = (0f64, 0f64);
    let mut failures = Vec::new();
    for (s, v) in params.specs.iter().zip(&params.vars) {
        let grad = store
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{arch}: parameter '{}' received no gradient", s.name));
        let (d, m) = max_diff(grad, g.get(&format!("grad.{}", s.name)));
        worst_abs = worst_abs.max(d);
        if m > 100.0 * GRAD_ATOL {
            worst_rel = worst_rel.max(d / m); // (not over noise-level gradients: the key biases)
        }
        if d > GRAD_ATOL + GRAD_RTOL * m {
            failures.push(format!("{}: max|Δ| {d:.3e}, max|ref| {m:.3e}", s.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{arch}: gradients differ from PyTorch's:\n{}",
        failures.join("\n")
    );
    (worst_abs, worst_rel)
}

/// Compare every weight with the fixture's `after.*` (tolerance `tol`); returns the worst
/// difference.
fn check_after(arch: &str, what: &str, g: &Golden, params: &ParamStore, tol: f64) -> f64 {
    let mut worst = 0f64;
    let mut failures = Vec::new();
    for (s, v) in params.specs.iter().zip(&params.vars) {
        let (d, _) = max_diff(v.as_tensor(), g.get(&format!("after.{}", s.name)));
        worst = worst.max(d);
        if d > tol {
            failures.push(format!("{}: max|Δ| {d:.3e}", s.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{arch}: weights after one AdamW step ({what}) differ from PyTorch's (tolerance {tol:.1e}):\n{}",
        failures.join("\n")
    );
    worst
}

/// The weights after tessera's own step against the fixture's. Adam's first step moves a weight
/// by `lr · g / (|g| + eps)`: a function of the gradient's sign where |g| >> eps, of its
/// rounding noise where the gradient is (mathematically) zero or at the level of the f32 error
/// (the key biases: softmax ignores them, so their gradient is exactly 0 in exact arithmetic and
/// both sides report noise of ~1e-10, which the step turns into ±lr). Elements whose reference
/// gradient exceeds 10x the gradient tolerance, and those whose gradient is exactly 0 on both
/// sides (unused embedding rows), are compared to `STEP_TOL`; the others only have to have
/// moved by at most lr beyond their decay (their gradients are checked by `check_grads`, and
/// tessera's AdamW on them by the step from torch's gradients). `ours` are tessera's gradients
/// in `params` order. Returns the worst difference over the compared elements and the number
/// of elements left out.
fn check_step(arch: &str, g: &Golden, params: &ParamStore, ours: &[Vec<f32>]) -> (f64, usize) {
    let (lr, wd) = (g.opt("lr"), g.opt("weight_decay"));
    let (mut worst, mut skipped) = (0f64, 0usize);
    let mut failures = Vec::new();
    for ((s, v), our_grad) in params.specs.iter().zip(&params.vars).zip(ours) {
        let got = vec(v.as_tensor());
        let want = vec(g.get(&format!("after.{}", s.name)));
        let init = vec(g.get(&s.name));
        let grad = vec(g.get(&format!("grad.{}", s.name)));
        let max_ref = grad.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
        let threshold = 10.0 * (GRAD_ATOL + GRAD_RTOL * max_ref);
        let decay = if s.decay { 1.0 - lr * wd } else { 1.0 };
        let mut bad = 0usize;
        let mut tensor_worst = 0f64;
        for i in 0..got.len() {
            let d = (got[i] as f64 - want[i] as f64).abs();
            let r = grad[i] as f64;
            if r.abs() >= threshold || (r == 0.0 && our_grad[i] == 0.0) {
                tensor_worst = tensor_worst.max(d);
                bad += usize::from(d > STEP_TOL);
            } else {
                skipped += 1;
                let moved = (got[i] as f64 - init[i] as f64 * decay).abs();
                bad += usize::from(moved > lr * (1.0 + 1e-4));
            }
        }
        worst = worst.max(tensor_worst);
        if bad > 0 {
            failures.push(format!(
                "{}: {bad} elements off, max|Δ| {tensor_worst:.3e}",
                s.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{arch}: weights after tessera's optimizer step differ from PyTorch's (tolerance {STEP_TOL:.1e}):\n{}",
        failures.join("\n")
    );
    (worst, skipped)
}

fn adamw(g: &Golden, params: &ParamStore) -> AdamW {
    AdamW::new(
        params,
        g.opt("beta1"),
        g.opt("beta2"),
        g.opt("eps"),
        g.opt("weight_decay"),
    )
    .unwrap()
}

/// The whole check for one architecture. `loss_of` computes the trainer's micro-batch loss
/// over the model built on `params`.
fn check_arch(
    arch: &str,
    g: &Golden,
    specs: Vec<ParamSpec>,
    loss_of: &dyn Fn(&ParamStore) -> Tensor,
) {
    g.check_parameter_sets(&specs);
    let lr = g.opt("lr");
    assert_eq!(g.meta["optimizer"]["steps"], 1);

    // Loss and gradients.
    let params = g.store(specs.clone());
    let loss = loss_of(&params);
    let dl = (loss.to_scalar::<f32>().unwrap() as f64 - g.loss()).abs();
    assert!(
        dl <= LOSS_TOL,
        "{arch}: loss {} vs PyTorch's {}",
        loss.to_scalar::<f32>().unwrap(),
        g.loss()
    );
    let grads = loss.backward().unwrap();
    let (grad_abs, grad_rel) = check_grads(arch, g, &params, &grads);

    // tessera's AdamW alone, from torch's gradients.
    let alone = g.store(specs.clone());
    let ref_grads: Vec<Tensor> = alone
        .specs
        .iter()
        .map(|s| g.get(&format!("grad.{}", s.name)).clone())
        .collect();
    let mut opt = adamw(g, &alone);
    opt.step(&alone, &ref_grads, lr).unwrap();
    let adam_only = check_after(
        arch,
        "tessera's AdamW on torch's gradients",
        g,
        &alone,
        ADAM_ONLY_TOL,
    );

    // The trainer's step: loss, backward, the gradient check, AdamW (no clipping, no accumulation).
    let trained = g.store(specs);
    let mut opt = adamw(g, &trained);
    let mut once = Some(());
    let (step_loss, _norm, _items) = optimizer_step(&trained, &mut opt, 1, 0.0, lr, || {
        Ok(once.take().map(|_| Micro {
            loss: loss_of(&trained),
            items: 1,
            terms: 1,
        }))
    })
    .unwrap()
    .unwrap();
    assert!((step_loss - g.loss()).abs() <= LOSS_TOL);
    let our_grads: Vec<Vec<f32>> = params
        .vars
        .iter()
        .map(|v| vec(grads.get(v.as_tensor()).unwrap()))
        .collect();
    let (end_to_end, skipped) = check_step(arch, g, &trained, &our_grads);
    let total: usize = trained.vars.iter().map(|v| v.elem_count()).sum();
    println!(
        "{arch}: loss |Δ| {dl:.2e}; gradients max|Δ| {grad_abs:.2e}, max|Δ|/max|ref| {grad_rel:.2e}; \
         after step: AdamW alone {adam_only:.2e}, end to end {end_to_end:.2e} \
         ({skipped} of {total} elements with a noise-level gradient left out)"
    );
}

fn check_decoder(arch: &str) {
    let g = Golden::load(arch);
    let cfg = TransformerConfig::from_file(g.dir.join("config.json")).unwrap();
    assert_eq!(cfg.dropout, 0.0);
    let (x, y) = (g.ids("input.ids"), g.ids("input.targets"));
    check_arch(arch, &g, param_specs(&cfg), &|params| {
        let model = Transformer::from_params(&cfg, params).unwrap();
        model.loss(&x, &y, None).unwrap()
    });
}

#[test]
fn gpt2_matches_pytorch() {
    check_decoder("gpt2");
}

#[test]
fn llama_matches_pytorch() {
    check_decoder("llama");
}

#[test]
fn bert_sequence_classification_matches_pytorch() {
    let g = Golden::load("bert");
    let cfg = TransformerConfig::from_file(g.dir.join("config.json")).unwrap();
    assert_eq!((cfg.dropout, cfg.attention_dropout), (0.0, 0.0));
    let n_labels = g.meta_labels();
    // The padded batch torch saw, packed as the fine-tune objective batches it.
    let ids: Vec<Vec<u32>> = g.ids("input.ids").to_vec2().unwrap();
    let mask: Vec<Vec<i64>> = g.get("input.attention_mask").to_vec2().unwrap();
    let seqs: Vec<Vec<u32>> = ids
        .iter()
        .zip(&mask)
        .map(|(s, m)| {
            let n = m.iter().filter(|&&x| x == 1).count();
            assert!(m[..n].iter().all(|&x| x == 1), "left-aligned padding");
            s[..n].to_vec()
        })
        .collect();
    let labels = g.ids("input.labels");
    let labels_names: Vec<String> = (0..n_labels).map(|i| format!("LABEL_{i}")).collect();
    // The classifier needs a tokenizer file (not used here): any BERT tokenizer of the repo.
    let tokenizer = g.dir.join("../../bert/base/tokenizer.json");
    let specs = head_param_specs(&cfg, HeadKind::Sequence, n_labels);
    check_arch("bert", &g, specs, &|params| {
        let model = Classifier::from_params(
            HeadKind::Sequence,
            &cfg,
            params,
            labels_names.clone(),
            cfg.max_position_embeddings,
            Path::new(&tokenizer),
        )
        .unwrap();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let packed = Packed::new(&refs, &Device::Cpu).unwrap();
        let mut rng = Rng::new(0);
        let mut drop = BlockDropout {
            hidden: 0.0,
            attention: 0.0,
            rng: &mut rng,
        };
        let logits = model.logits_packed(&packed, None, Some(&mut drop)).unwrap();
        tessera::nn::loss::cross_entropy(&logits, &labels).unwrap()
    });
}
