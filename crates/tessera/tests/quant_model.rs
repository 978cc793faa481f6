//! SmolLM2-135M-Instruct run on its quantized weights (`tessera::infer::Decoder`: Q4_1/Q8_0
//! blocks, activations quantized to 8 bits as llama.cpp does) against the `llama_cpp` block of
//! `fixtures/reference/smollm2_logits.json`, whose arithmetic it follows.
//!
//! What is required, and why these bounds. We follow llama.cpp's arithmetic (8-bit activation
//! blocks with the same scales and rounding, f16 KV cache, query and attention weights rounded to
//! f16) but not bit for bit: sums run in another order, and exp/SiLU/rotary angles come from other
//! routines. Such 1-ulp differences do not stay small: each one can flip the rounding of an 8-bit
//! activation (a step of 1/127 of its block's maximum), and 30 layers amplify the flips to
//! 0.2-0.35 in a logit. (The same happens inside llama.cpp: its f16 cache alone moves f32-weight
//! logits by 0.05.) So exact top-1 agreement at near ties cannot be asked for; we require:
//! the argmax equal to llama.cpp's at ≥ 95% of the 128 prompt positions, and wherever it is not,
//! llama.cpp's choice within the near-tie bound of ours; at each last position, every id of
//! llama.cpp's top 20 that is not in ours within that bound of our 20th logit (churn at the
//! boundary only) and at least 17 of the 20 shared; the top-20 logits within the top-20 bound;
//! and the 32-step greedy continuation equal for ≥ 16 steps on most (≥ 3) of the 5 prompts
//! (`chat_capital` parts at step 7 on every kernel, at a near tie — there llama.cpp and
//! transformers themselves part at step 0).
//! The structure apart from quantization is checked against transformers with dequantized weights.
//! The invariants: decoding token by token with the KV cache gives the logits of one pass over
//! the whole sequence, and feeding a sequence in pieces equals feeding it at once.

use serde_json::Value;
use tessera::infer::Decoder;

/// Largest top-20 logit difference allowed, and how far llama.cpp's choice may lie below ours
/// where the argmax or the top-20 membership differ. Every kernel level sums the same integer
/// products in another order than llama.cpp, and the amplification described above moves the
/// logits by that much. Measured on the 5 prompts: AVX-512 with the interleaved layout (each
/// block's 32 products summed exactly in one lane, then scaled; llama.cpp keeps 8 partial lanes
/// per block) 0.63, argmax different at 2 of 128 positions, boundary gaps up to 0.23; AVX-512 on
/// the row layout 0.45 (5 positions); AVX2 0.608; NEON (under qemu) 0.515; one near tie of 0.259
/// (portable). That spread is itself the evidence that these differences are rounding
/// amplification and not a formula error: only the summation order changes between levels.
const TOP20_TOL: f32 = 0.7;
const NEAR_TIE: f32 = 0.3;

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/reference/smollm2_logits.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixtures/reference")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn model() -> Decoder {
    let path = tessera::hub::resolve("smollm2-135m-instruct").expect("fetch smollm2-135m-instruct");
    Decoder::load(path).unwrap()
}

#[test]
fn smollm2_quantized_matches_llama_cpp() {
    let f = fixture();
    let model = model();
    let v = model.cfg.vocab_size;
    let mut greedy_ok = 0;
    let mut argmax_bad = 0;
    let mut positions = 0;
    let mut worst_top20 = 0f32;
    let mut min_overlap = 20;
    for p in f["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["ids"]);
        let reference = &p["llama_cpp"];
        let mut st = model.new_state(prompt.len() + 32).unwrap();
        let all = model.forward_all(&mut st, &prompt).unwrap();
        let rows: Vec<&[f32]> = all.chunks_exact(v).collect();
        // Argmax at every prompt position.
        let want = ids(&reference["argmax_all_positions"]);
        let got: Vec<u32> = rows.iter().map(|r| argmax(r)).collect();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            if g != w {
                let r = rows[i];
                let gap = r[g as usize] - r[w as usize];
                eprintln!(
                    "{name}: position {i}: ours {g} vs llama.cpp {w}, a near tie for us (gap {gap:.4})"
                );
                assert!(
                    gap < NEAR_TIE,
                    "{name}: position {i}: argmax {g} vs {w}, gap {gap}"
                );
            }
        }
        let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        argmax_bad += got.len() - agree;
        positions += got.len();
        // Top-20 at the last position.
        let last = rows[rows.len() - 1];
        let top: Vec<(u32, f32)> = reference["top20"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
            .collect();
        let mut order: Vec<u32> = (0..v as u32).collect();
        order.sort_by(|&a, &b| last[b as usize].total_cmp(&last[a as usize]));
        let ours: Vec<u32> = order[..20].to_vec();
        let overlap = top.iter().filter(|(id, _)| ours.contains(id)).count();
        let ours_20th = last[order[19] as usize];
        for (id, _) in top.iter().filter(|(id, _)| !ours.contains(id)) {
            let gap = ours_20th - last[*id as usize];
            assert!(
                gap < NEAR_TIE,
                "{name}: llama.cpp's top-20 id {id} is {gap} below our 20th logit"
            );
        }
        let max_diff = top
            .iter()
            .map(|&(id, l)| (last[id as usize] - l).abs())
            .fold(0f32, f32::max);
        let hf_diff = p["transformers"]["top20"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (last[e[0].as_u64().unwrap() as usize] - e[1].as_f64().unwrap() as f32).abs())
            .fold(0f32, f32::max);
        eprintln!("{name}: top20 max |diff| vs transformers {hf_diff:.4}");
        // Greedy continuation with the KV cache.
        let mut greedy = vec![argmax(last)];
        while greedy.len() < 32 {
            let logits = model.forward(&mut st, &greedy[greedy.len() - 1..]).unwrap();
            greedy.push(argmax(logits));
        }
        let want_greedy = ids(&reference["greedy32"]["ids"]);
        let same = greedy
            .iter()
            .zip(&want_greedy)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{name}: top20 overlap {overlap}/20, top20 max |diff| {max_diff:.4}, greedy equal for {same}/32 steps"
        );
        worst_top20 = worst_top20.max(max_diff);
        min_overlap = min_overlap.min(overlap);
        if same >= 16 {
            greedy_ok += 1;
        }
    }
    assert!(min_overlap >= 17, "top-20 overlap {min_overlap}");
    assert!(
        worst_top20 < TOP20_TOL,
        "top-20 logits differ by {worst_top20}"
    );
    eprintln!("argmax differs from llama.cpp's at {argmax_bad} of {positions} prompt positions");
    assert!(
        argmax_bad * 20 <= positions,
        "argmax differs at {argmax_bad} of {positions}"
    );
    assert!(greedy_ok >= 3, "greedy agreement on {greedy_ok}/5 prompts");
}

/// The same model with dequantized weights and transformers' arithmetic (f32 activations and
/// cache, `Decoder::dequantized`) follows the transformers block: this checks the structure
/// (rotary order, attention, norms, cache) apart from quantization.
#[test]
fn dequantized_weights_match_transformers() {
    let f = fixture();
    let model = model().dequantized().unwrap();
    let v = model.cfg.vocab_size;
    let mut worst = 0f32;
    for p in f["prompts"].as_array().unwrap() {
        let prompt = ids(&p["ids"]);
        let reference = &p["transformers"];
        let mut st = model.new_state(prompt.len()).unwrap();
        let all = model.forward_all(&mut st, &prompt).unwrap();
        let got: Vec<u32> = all.chunks_exact(v).map(argmax).collect();
        assert_eq!(
            got,
            ids(&reference["argmax_all_positions"]),
            "{}",
            p["name"]
        );
        let last = &all[all.len() - v..];
        for e in reference["top20"].as_array().unwrap() {
            let (id, l) = (
                e[0].as_u64().unwrap() as usize,
                e[1].as_f64().unwrap() as f32,
            );
            worst = worst.max((last[id] - l).abs());
        }
    }
    eprintln!("dequantized vs transformers: top-20 max |diff| {worst:.2e}");
    // f32 everywhere, as transformers: only the summation order differs (measured 2.7e-5; the
    // fixture's values are rounded to 6 decimals).
    assert!(worst < 1e-4, "{worst}");
}

/// Per-token KL(p ‖ q) over the vocabulary between two logit rows.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let lse = |r: &[f32]| {
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + r.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum()
}

/// The quantized model and the same weights dequantized (one model, two storages) agree within
/// what quantized arithmetic moves: at most the distance between llama.cpp and transformers on
/// the same prompts (the fixture's own comparison: KL 0.002–0.016 at the last position, top-1
/// equal at 124 of 128 prompt positions).
#[test]
fn quantized_and_dequantized_agree_within_the_quantization_bound() {
    let f = fixture();
    let q = model();
    let d = q.dequantized().unwrap();
    let v = q.cfg.vocab_size;
    let (mut agree, mut positions, mut worst_kl) = (0, 0, 0f64);
    for p in f["prompts"].as_array().unwrap() {
        let prompt = ids(&p["ids"]);
        let lq = q
            .forward_all(&mut q.new_state(prompt.len()).unwrap(), &prompt)
            .unwrap();
        let ld = d
            .forward_all(&mut d.new_state(prompt.len()).unwrap(), &prompt)
            .unwrap();
        for (a, b) in lq.chunks_exact(v).zip(ld.chunks_exact(v)) {
            agree += (argmax(a) == argmax(b)) as usize;
            positions += 1;
        }
        let k = kl(&ld[ld.len() - v..], &lq[lq.len() - v..]);
        let fixture_kl = p["comparison"]["last_pos_kl_hf_to_llamacpp"]
            .as_f64()
            .unwrap();
        eprintln!(
            "{}: KL(dequantized ‖ quantized) {k:.4} (llama.cpp vs transformers: {fixture_kl:.4})",
            p["name"]
        );
        worst_kl = worst_kl.max(k);
    }
    eprintln!(
        "top-1 equal at {agree} of {positions} positions, worst last-position KL {worst_kl:.4}"
    );
    assert!(worst_kl < 0.02, "KL {worst_kl}");
    assert!(agree * 100 >= positions * 95, "{agree} of {positions}");
}

#[test]
fn kv_cache_decoding_equals_one_pass() {
    let model = model();
    let v = model.cfg.vocab_size;
    let seq: Vec<u32> = vec![
        1, 504, 3458, 282, 4649, 314, 260, 1450, 30, 198, 216, 7042, 28, 60,
    ];
    let mut st = model.new_state(64).unwrap();
    let all = model.forward_all(&mut st, &seq).unwrap();
    // One token at a time.
    let mut st1 = model.new_state(64).unwrap();
    let mut worst = 0f32;
    for (i, &t) in seq.iter().enumerate() {
        let step = model.forward(&mut st1, &[t]).unwrap();
        let row = &all[i * v..(i + 1) * v];
        let d = step
            .iter()
            .zip(row)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(d);
        assert_eq!(argmax(step), argmax(row), "position {i}");
    }
    // In two pieces.
    let mut st2 = model.new_state(64).unwrap();
    model.forward(&mut st2, &seq[..5]).unwrap();
    let tail = model.forward(&mut st2, &seq[5..]).unwrap();
    let d2 = tail
        .iter()
        .zip(&all[(seq.len() - 1) * v..])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("cache vs one pass: max |diff| {worst:.2e} (steps), {d2:.2e} (two pieces)");
    // The same integer dot products in another grouping: only the f32 sums' order differs.
    assert!(worst < 1e-3 && d2 < 1e-3, "{worst} {d2}");
}

/// A step that feeds whole prompt tails beside single tokens (`Decoder::step_many`: a request
/// joining the running batch) gives every sequence exactly the logits it gets alone, and leaves
/// each state as feeding alone would.
#[test]
fn mixed_step_with_prompts_equals_each_sequence_alone() {
    let model = model();
    let v = model.cfg.vocab_size;
    let prompts: [&[u32]; 3] = [&[1, 504, 3458, 282, 4649, 314], &[1, 7042, 28], &[2]];
    let joining: [&[u32]; 2] = [&[1, 504, 3458, 282, 1450, 30, 198, 216, 60], &[1, 28]];
    let mut alone: Vec<_> = (0..5).map(|_| model.new_state(32).unwrap()).collect();
    let mut mixed: Vec<_> = (0..5).map(|_| model.new_state(32).unwrap()).collect();
    let mut next = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        model.forward(&mut mixed[i], p).unwrap();
        next.push(argmax(model.forward(&mut alone[i], p).unwrap()));
    }
    let mut feeds: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    feeds.extend(joining.iter().map(|p| p.to_vec()));
    let mut batch = model.new_batch();
    let rows = {
        let mut refs: Vec<_> = mixed.iter_mut().collect();
        let f: Vec<&[u32]> = feeds.iter().map(|f| &f[..]).collect();
        model.step_many(&mut batch, &mut refs, &f).unwrap().to_vec()
    };
    assert_eq!(rows.len(), 5 * v);
    for (i, st) in alone.iter_mut().enumerate() {
        let one = model.forward(st, &feeds[i]).unwrap().to_vec();
        assert_eq!(one, rows[i * v..(i + 1) * v], "sequence {i}");
        assert_eq!(mixed[i].len(), st.len());
    }
    // Bad input names the problem and moves no state.
    let before: Vec<usize> = mixed.iter().map(|s| s.len()).collect();
    let mut refs: Vec<_> = mixed.iter_mut().take(2).collect();
    let e = model
        .step_many(&mut batch, &mut refs, &[&[1], &[]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tokens"), "{e}");
    let e = model
        .step_many(&mut batch, &mut refs, &[&[1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 sequences but 1"), "{e}");
    assert_eq!(mixed.iter().map(|s| s.len()).collect::<Vec<_>>(), before);
}

/// A decode step over several sequences at once (one product over the quantized weights for all
/// of them, each attending to its own cache) gives each sequence the logits it gets alone; a
/// prefix copied from another state (the prefix cache) equals computing it.
#[test]
fn batched_step_equals_each_sequence_alone() {
    let model = model();
    let v = model.cfg.vocab_size;
    let prompts: [&[u32]; 4] = [
        &[1, 504, 3458, 282, 4649, 314],
        &[1, 7042, 28],
        &[1, 504, 3458, 282, 1450, 30, 198, 216, 60],
        &[2],
    ];
    let mut alone: Vec<_> = prompts
        .iter()
        .map(|_| model.new_state(32).unwrap())
        .collect();
    let mut batched: Vec<_> = prompts
        .iter()
        .map(|_| model.new_state(32).unwrap())
        .collect();
    let mut next = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        model.forward(&mut batched[i], p).unwrap();
        next.push(argmax(model.forward(&mut alone[i], p).unwrap()));
    }
    let mut batch = model.new_batch();
    let mut worst = 0f32;
    for _ in 0..6 {
        let mut refs: Vec<_> = batched.iter_mut().collect();
        let rows = model.step(&mut batch, &mut refs, &next).unwrap().to_vec();
        assert_eq!(rows.len(), prompts.len() * v);
        for (i, st) in alone.iter_mut().enumerate() {
            let one = model.forward(st, &[next[i]]).unwrap().to_vec();
            let row = &rows[i * v..(i + 1) * v];
            let d = one
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(d);
            assert_eq!(batched[i].len(), st.len());
            next[i] = argmax(&one);
        }
    }
    eprintln!("batched step vs alone: max |diff| {worst:.2e}");
    assert!(worst < 1e-3, "{worst}");
    // A state that is full refuses the step and no state moves.
    let mut full = model.new_state(2).unwrap();
    model.forward(&mut full, &[1, 2]).unwrap();
    let before = batched[0].len();
    let mut refs = vec![&mut batched[0], &mut full];
    let e = model
        .step(&mut batch, &mut refs, &[1, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceed the context"), "{e}");
    assert_eq!(batched[0].len(), before);
    // Prefix cache: copy the first 4 positions of prompt 2, feed the rest.
    let p = prompts[2];
    let mut donor = model.new_state(32).unwrap();
    let want = model.forward(&mut donor, p).unwrap().to_vec();
    let mut st = model.new_state(32).unwrap();
    model.copy_prefix(&mut st, &donor, 4).unwrap();
    assert_eq!(st.len(), 4);
    let got = model.forward(&mut st, &p[4..]).unwrap();
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-3, "prefix copy: {d}");
}

#[test]
fn bad_input_is_an_error() {
    let model = model();
    let mut st = model.new_state(8).unwrap();
    assert!(model.forward(&mut st, &[]).is_err());
    assert!(model.forward(&mut st, &[49152]).is_err());
    assert!(model.forward(&mut st, &[1; 9]).is_err());
    assert_eq!(st.len(), 0, "a failed call leaves the state as it was");
    model.forward(&mut st, &[1; 8]).unwrap();
    let e = model.forward(&mut st, &[1]).unwrap_err().to_string();
    assert!(e.contains("exceed the context"), "{e}");
}
