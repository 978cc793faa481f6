//! The one Transformer as configurations: an encoder-decoder built from two `TransformerConfig`s
//! (a bidirectional encoder and a causal decoder whose blocks fill the cross-attention slot, both
//! post-norm with sinusoidal positions, as the original Transformer), written in tessera's own
//! config dialect. The invariants an encoder-decoder must hold: the decoder is causal, padded
//! source tokens are invisible, the source reaches the decoder only through cross-attention,
//! gradients reach every parameter of both stacks, and configs and weights round-trip.

use candle_core::{DType, Device, Tensor};
use tessera::models::{
    AttentionKind, Memory, NormPlacement, ParamStore, PositionKind, Transformer, TransformerConfig,
};
use tessera::nn::attention::padding_mask;
use tessera::util::rng::Rng;

fn encoder_cfg() -> TransformerConfig {
    // Start from BERT's shape and change what the original Transformer does differently.
    let mut c = TransformerConfig::from_hf_json(&serde_json::json!({"model_type": "bert",
        "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 32, "max_position_embeddings": 32, "hidden_act": "relu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    .unwrap();
    c.type_vocab_size = 0;
    c.embedding_norm = false;
    c.position = PositionKind::Sinusoidal;
    c.norm_eps = 1e-5;
    c.initializer_range = 0.3; // large enough that every path visibly moves the output
    c
}

fn decoder_cfg() -> TransformerConfig {
    let mut c = encoder_cfg();
    c.arch = tessera::models::Arch::Gpt2; // tensor names: any family's generic block names
    c.attention = AttentionKind::Causal;
    c.cross_attention = true;
    c.tie_word_embeddings = true;
    c
}

fn build(cfg: &TransformerConfig, seed: u64) -> (ParamStore, Transformer) {
    let p = ParamStore::init(cfg, &mut Rng::new(seed), DType::F32, &Device::Cpu).unwrap();
    let m = Transformer::from_params(cfg, &p).unwrap();
    (p, m)
}

fn ids(rows: &[&[u32]]) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Decoder hidden states for `tgt` given source `src` with its 0/1 mask.
fn run(enc: &Transformer, dec: &Transformer, src: &Tensor, mask: &Tensor, tgt: &Tensor) -> Tensor {
    let memory = enc.encode(src, Some(mask), None, None).unwrap();
    let key_mask = padding_mask(mask).unwrap();
    dec.forward_hidden_with(
        tgt,
        Some(Memory {
            states: &memory,
            mask: Some(&key_mask),
        }),
        None,
    )
    .unwrap()
}

#[test]
fn configs_are_the_one_shape_and_round_trip() {
    let (e, d) = (encoder_cfg(), decoder_cfg());
    for c in [&e, &d] {
        c.validate().unwrap();
        assert_eq!(c.norm_placement, NormPlacement::Post);
        let v = c.to_config_json();
        assert!(v.get("model_type").is_none(), "tessera's dialect: {v}");
        assert_eq!(&TransformerConfig::from_hf_json(&v).unwrap(), c);
    }
    // No position parameters (the table is fixed); four cross-attention projections per block.
    let (p, _) = build(&d, 1);
    assert!(p.specs.iter().all(|s| !s.name.contains("wpe")));
    let cross = p
        .specs
        .iter()
        .filter(|s| s.name.contains(".xq.weight"))
        .count();
    assert_eq!(cross, d.num_layers);
    // The inference backend runs decoder-only pre-norm models and says so.
    let e = d.require_decoder("generate").unwrap_err().to_string();
    assert!(e.contains("cross-attention slot"), "{e}");
}

#[test]
fn encoder_decoder_invariants() {
    let (_, enc) = build(&encoder_cfg(), 1);
    let (_, dec) = build(&decoder_cfg(), 2);
    let src = ids(&[&[5, 6, 7, 8, 9, 0], &[11, 12, 13, 0, 0, 0]]);
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], &Device::Cpu).unwrap();
    let tgt = ids(&[&[1, 2, 3, 4, 5], &[1, 7, 8, 9, 10]]);
    let h = run(&enc, &dec, &src, &mask, &tgt);
    assert_eq!(h.dims(), &[2, 5, 16]);

    // Causal: changing the last two target tokens leaves the first three outputs alone.
    let tgt2 = ids(&[&[1, 2, 3, 30, 31], &[1, 7, 8, 32, 33]]);
    let h2 = run(&enc, &dec, &src, &mask, &tgt2);
    assert!(max_diff(&h.narrow(1, 0, 3).unwrap(), &h2.narrow(1, 0, 3).unwrap()) < 1e-6);
    assert!(max_diff(&h.narrow(1, 3, 2).unwrap(), &h2.narrow(1, 3, 2).unwrap()) > 1e-3);

    // Padded source tokens are invisible; real ones are seen (through cross-attention only).
    let src_pad = ids(&[&[5, 6, 7, 8, 9, 21], &[11, 12, 13, 22, 23, 24]]);
    let h3 = run(&enc, &dec, &src_pad, &mask, &tgt);
    assert!(
        max_diff(&h, &h3) < 1e-6,
        "a padded source token changed the output"
    );
    let src_real = ids(&[&[5, 6, 7, 8, 25, 0], &[11, 12, 13, 0, 0, 0]]);
    let h4 = run(&enc, &dec, &src_real, &mask, &tgt);
    let seen = max_diff(&h.narrow(0, 0, 1).unwrap(), &h4.narrow(0, 0, 1).unwrap());
    assert!(
        seen > 1e-3,
        "a real source token changed the output by only {seen}"
    );
    assert!(max_diff(&h.narrow(0, 1, 1).unwrap(), &h4.narrow(0, 1, 1).unwrap()) < 1e-6);

    // The slot needs its memory, and a model without the slot refuses one.
    let e = dec.forward_hidden(&tgt, None).unwrap_err().to_string();
    assert!(e.contains("needs the encoder's output"), "{e}");
    let e = enc.forward_hidden(&tgt, None).unwrap_err().to_string();
    assert!(e.contains("causal"), "{e}");
}

#[test]
fn gradients_reach_both_stacks_and_weights_round_trip() {
    let (pe, enc) = build(&encoder_cfg(), 3);
    let (pd, dec) = build(&decoder_cfg(), 4);
    let src = ids(&[&[5, 6, 7, 8]]);
    let mask = Tensor::new(&[[1u32, 1, 1, 1]], &Device::Cpu).unwrap();
    let tgt = ids(&[&[1, 2, 3]]);
    let h = run(&enc, &dec, &src, &mask, &tgt);
    let loss = dec.head(&h).unwrap().sqr().unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    for (store, what) in [(&pe, "encoder"), (&pd, "decoder")] {
        for (s, v) in store.specs.iter().zip(&store.vars) {
            let grad = g
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{what}: no gradient for {}", s.name));
            let n: f32 = grad.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            // Token rows never looked up have zero gradient; everything else moves.
            if !s.name.ends_with("wte.weight") {
                assert!(n > 0.0, "{what}: zero gradient for {}", s.name);
            }
        }
    }
    // Save the decoder (config in tessera's dialect + safetensors) and load it back.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&decoder_cfg().to_config_json()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        Transformer::safetensors_bytes(&pd).unwrap(),
    )
    .unwrap();
    let back = Transformer::load_dir(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let h_back = run(&enc, &back, &src, &mask, &tgt);
    assert_eq!(max_diff(&h, &h_back), 0.0);
}
