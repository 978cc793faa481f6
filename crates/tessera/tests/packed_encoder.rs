//! The packed (unpadded) encoder path: the fused packed attention against finite differences
//! (with and without attention dropout), and `Transformer::forward_packed` against the padded
//! `Transformer::forward` at every real token, forward and gradients.

use candle_core::Var;
use std::sync::Arc;
use tessera::kernels::encoder_attention::packed_attention;
use tessera::models::encoder::{bert_param_specs, Packed};
use tessera::models::params::Init;
use tessera::models::{Transformer, TransformerConfig};
use tessera::util::rng::Rng;
use tessera::{DType, Device, Tensor};

#[path = "common/gradcheck.rs"]
mod fd;
use fd::{check, project, randn};

#[test]
fn packed_attention_gradients() {
    let (h, d) = (2, 3);
    let lens = [4usize, 1, 6, 3];
    let mut offsets = vec![0];
    for l in lens {
        offsets.push(offsets.last().unwrap() + l);
    }
    let n = *offsets.last().unwrap();
    let offsets: Arc<[usize]> = offsets.into();
    let qkv = Var::from_tensor(&randn(&mut Rng::new(3), &[n, 3 * h * d], 1.0)).unwrap();
    for dropout in [None, Some((0.3, 77u64))] {
        check(
            &format!("packed attention, dropout {dropout:?}"),
            &[&qkv],
            usize::MAX,
            &|| {
                let y = packed_attention(qkv.as_tensor(), offsets.clone(), h, d, dropout).unwrap();
                project(&y, 5)
            },
        );
    }
}

#[test]
fn packed_attention_dropout_is_seeded() {
    let (h, d) = (4, 8);
    let n = 64;
    let offsets: Arc<[usize]> = vec![0, 40, 64].into();
    let qkv = randn(&mut Rng::new(9), &[n, 3 * h * d], 1.0);
    let run = |p: Option<(f64, u64)>| {
        packed_attention(&qkv, offsets.clone(), h, d, p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let (a, b, c, none) = (
        run(Some((0.2, 1))),
        run(Some((0.2, 1))),
        run(Some((0.2, 2))),
        run(None),
    );
    assert_eq!(a, b, "the same seed gives the same mask");
    assert_ne!(a, c, "another seed gives another mask");
    assert_ne!(a, none);
    // With v = 1 everywhere, y = Σ_j P'_ij: on average 1 (inverted dropout keeps the expectation),
    // and the dropped fraction shows in the spread.
    let mut ones = qkv.narrow(1, 0, 2 * h * d).unwrap();
    ones = Tensor::cat(
        &[
            &ones,
            &Tensor::ones((n, h * d), DType::F64, &Device::Cpu).unwrap(),
        ],
        1,
    )
    .unwrap();
    let y: Vec<f64> = packed_attention(&ones, offsets.clone(), h, d, Some((0.2, 4)))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    assert!((mean - 1.0).abs() < 0.05, "mean row sum {mean}");
}

fn tiny_bert(seed: u64) -> (TransformerConfig, Vec<Var>, Transformer) {
    let cfg = TransformerConfig::from_hf_json(&serde_json::json!({"model_type": "bert", "vocab_size": 13,
        "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 12,
        "max_position_embeddings": 8, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}))
    .unwrap();
    let mut rng = Rng::new(seed);
    let specs = bert_param_specs(&cfg, "", true);
    let vars: Vec<Var> = specs
        .iter()
        .map(|s| {
            let base = if matches!(s.init, Init::Ones) {
                1.0
            } else {
                0.0
            };
            Var::from_tensor(&(randn(&mut rng, &s.shape, 0.3) + base).unwrap()).unwrap()
        })
        .collect();
    let map = specs
        .iter()
        .zip(&vars)
        .map(|(s, v)| (s.name.clone(), v.as_tensor().clone()))
        .collect();
    let bert =
        Transformer::from_tensors_prefixed(&cfg, &map, "", std::path::Path::new("<test>")).unwrap();
    (cfg, vars, bert)
}

/// The packed forward equals the padded one at every real token, and so do the gradients of
/// every parameter (a loss on real tokens only).
#[test]
fn packed_forward_equals_padded() {
    let (_cfg, vars, bert) = tiny_bert(41);
    let seqs: [&[u32]; 3] = [&[1, 5, 7, 2, 12], &[3, 3, 9], &[4, 11]];
    let types: [&[u32]; 3] = [&[0, 0, 1, 1, 1], &[0, 1, 1], &[1, 0]];
    let packed = Packed::new(&seqs, &Device::Cpu)
        .unwrap()
        .with_token_types(&types)
        .unwrap();
    let ids = Tensor::new(
        &[[1u32, 5, 7, 2, 12], [3, 3, 9, 0, 0], [4, 11, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let am = Tensor::new(
        &[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let tt = Tensor::new(
        &[[0u32, 0, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    // The rows of the padded output that hold real tokens, in packed order.
    let rows = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7, 10, 11], &Device::Cpu).unwrap();
    let padded_loss = || {
        let h = bert.encode(&ids, Some(&am), Some(&tt), None).unwrap(); // (3, 5, C)
        let real = h.reshape((15, 8)).unwrap().index_select(&rows, 0).unwrap();
        let pooled = bert.pool(&h).unwrap();
        let l = (project(&real, 1) + project(&pooled, 2)).unwrap();
        (real, l)
    };
    let packed_loss = || {
        let h = bert.encode_packed(&packed, None).unwrap(); // (10, C)
        let pooled = bert.pool_packed(&h, &packed).unwrap();
        let l = (project(&h, 1) + project(&pooled, 2)).unwrap();
        (h, l)
    };
    let (a, la) = padded_loss();
    let (b, lb) = packed_loss();
    let diff: f64 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        diff < 1e-12,
        "packed vs padded hidden states differ by {diff}"
    );
    let (ga, gb) = (la.backward().unwrap(), lb.backward().unwrap());
    for (i, v) in vars.iter().enumerate() {
        let x = ga.get(v.as_tensor()).expect("padded gradient");
        let y = gb
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("parameter {i}: no packed gradient"));
        let d: f64 = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-10, "parameter {i}: gradients differ by {d}");
    }
    // Mean of the real rows of each sequence.
    let means = packed
        .mean_rows(&bert.encode_packed(&packed, None).unwrap())
        .unwrap();
    assert_eq!(means.dims(), &[3, 8]);
}

/// f32 through the whole packed path agrees with f64 (the kernel's f32 exp and products).
#[test]
fn packed_forward_f32() {
    let (cfg, vars, bert64) = tiny_bert(7);
    let specs = bert_param_specs(&cfg, "", true);
    let map = specs
        .iter()
        .zip(&vars)
        .map(|(s, v)| (s.name.clone(), v.as_tensor().to_dtype(DType::F32).unwrap()))
        .collect();
    let bert32 =
        Transformer::from_tensors_prefixed(&cfg, &map, "", std::path::Path::new("<test>")).unwrap();
    let seqs: [&[u32]; 2] = [&[1, 2, 3, 4, 5, 6, 7, 8], &[9, 10, 11]];
    let packed = Packed::new(&seqs, &Device::Cpu).unwrap();
    let a = bert64.encode_packed(&packed, None).unwrap();
    let b = bert32
        .encode_packed(&packed, None)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let diff: f64 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff < 1e-4, "f32 vs f64: {diff}");
}
