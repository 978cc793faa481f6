//! The Transformer block's cross-attention slot against PyTorch's `nn.Transformer`: a tiny random
//! encoder-decoder (2 + 2 post-norm layers, C = 16, 4 heads, ReLU MLP of 32, source padding mask,
//! causal target) built from tessera's one [`Block`] as a configuration: encoder blocks with
//! bidirectional self-attention, decoder blocks with causal self-attention and the cross-attention
//! slot filled. Fixture: `scripts/seq2seq_fixture.py` (weights under PyTorch's names, inputs,
//! outputs, and every parameter's gradient of `sum(decoder output * probe)`).
//!
//! Tolerance: 1e-5 absolute on outputs (f32; PyTorch's reference is f32 on the CPU, the same
//! products in a different summation order), 1e-4 relative to the largest gradient on gradients.

use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

#[path = "common/compare.rs"]
mod compare;
use compare::{max_abs, max_abs_diff};
use tessera::models::{Block, CrossAttention, Memory, NormPlacement};
use tessera::nn::attention::{padding_mask, QkvProj};
use tessera::nn::{Attention, Linear, Mixing, Mlp, Norm};
use tessera::weights::safetensors::load_safetensors;

const C: usize = 16;
const HEADS: usize = 4;

fn fixture() -> HashMap<String, Tensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seq2seq/nn_transformer.safetensors");
    load_safetensors(&p, &Device::Cpu).expect("run scripts/seq2seq_fixture.py")
}

/// The weights as trainable variables (gradients reach them).
struct Weights {
    vars: HashMap<String, Var>,
}

impl Weights {
    fn get(&self, name: &str) -> Tensor {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
            .as_tensor()
            .clone()
    }

    fn linear(&self, p: &str) -> Linear {
        Linear::new(
            self.get(&format!("{p}.weight")),
            Some(self.get(&format!("{p}.bias"))),
        )
    }

    fn norm(&self, p: &str) -> Norm {
        Norm::LayerNorm {
            weight: self.get(&format!("{p}.weight")),
            bias: self.get(&format!("{p}.bias")),
            eps: 1e-5,
        }
    }

    /// PyTorch's `MultiheadAttention`: one (3C, C) in-projection, split into q, k, v.
    fn attention(&self, p: &str) -> Attention {
        let w = self.get(&format!("{p}.in_proj_weight"));
        let b = self.get(&format!("{p}.in_proj_bias"));
        let part = |i: usize| {
            Linear::new(
                w.narrow(0, i * C, C).unwrap(),
                Some(b.narrow(0, i * C, C).unwrap()),
            )
        };
        Attention {
            qkv: QkvProj::Split {
                q: part(0),
                k: part(1),
                v: part(2),
            },
            out: self.linear(&format!("{p}.out_proj")),
            num_heads: HEADS,
            num_kv_heads: HEADS,
            head_dim: C / HEADS,
            scale: None,
        }
    }

    fn mlp(&self, p: &str) -> Mlp {
        Mlp::Plain {
            fc: self.linear(&format!("{p}.linear1")),
            proj: self.linear(&format!("{p}.linear2")),
            act: tessera::models::Activation::Relu,
        }
    }

    /// `TransformerEncoderLayer` (post-norm): self-attention + norm1, MLP + norm2.
    fn encoder_block(&self, l: usize) -> Block {
        let p = format!("encoder.layers.{l}");
        Block {
            placement: NormPlacement::Post,
            norm1: self.norm(&format!("{p}.norm1")),
            attn: self.attention(&format!("{p}.self_attn")),
            cross: None,
            norm2: self.norm(&format!("{p}.norm2")),
            mlp: self.mlp(&p),
        }
    }

    /// `TransformerDecoderLayer` (post-norm): self-attention + norm1, cross-attention + norm2,
    /// MLP + norm3.
    fn decoder_block(&self, l: usize) -> Block {
        let p = format!("decoder.layers.{l}");
        Block {
            placement: NormPlacement::Post,
            norm1: self.norm(&format!("{p}.norm1")),
            attn: self.attention(&format!("{p}.self_attn")),
            cross: Some(CrossAttention {
                attn: self.attention(&format!("{p}.multihead_attn")),
                norm: self.norm(&format!("{p}.norm2")),
            }),
            norm2: self.norm(&format!("{p}.norm3")),
            mlp: self.mlp(&p),
        }
    }
}

/// The fixture's weights as trainable variables.
fn weights(f: &HashMap<String, Tensor>) -> Weights {
    Weights {
        vars: f
            .iter()
            .filter(|(k, _)| k.starts_with("encoder.") || k.starts_with("decoder."))
            .map(|(k, v)| (k.clone(), Var::from_tensor(v).unwrap()))
            .collect(),
    }
}

#[test]
fn encoder_decoder_of_blocks_matches_nn_transformer() {
    let f = fixture();
    let w = weights(&f);
    let enc: Vec<Block> = (0..2).map(|l| w.encoder_block(l)).collect();
    let dec: Vec<Block> = (0..2).map(|l| w.decoder_block(l)).collect();

    // Encoder: bidirectional self-attention over the padded source, then the stack's final norm.
    let src_mask = padding_mask(&f["input.src_mask"]).unwrap(); // (B, 1, 1, S)
    let mut x = f["input.src"].clone();
    let bidirectional = Mixing::Bidirectional {
        mask: Some(&src_mask),
    };
    for b in &enc {
        x = b.forward(&x, &bidirectional, None, None).unwrap();
    }
    let memory = w.norm("encoder.norm").forward(&x).unwrap();
    let d = max_abs_diff(&memory, &f["output.memory"]);
    assert!(
        d <= 1e-5,
        "encoder output differs from nn.Transformer by {d}"
    );

    // Decoder: causal self-attention, cross-attention to the memory (padding masked).
    let mem = Memory {
        states: &memory,
        mask: Some(&src_mask),
    };
    let mut y = f["input.tgt"].clone();
    let causal = Mixing::Causal { rope: None };
    for b in &dec {
        y = b.forward(&y, &causal, Some(mem), None).unwrap();
    }
    let out = w.norm("decoder.norm").forward(&y).unwrap();
    let d = max_abs_diff(&out, &f["output.decoder"]);
    assert!(
        d <= 1e-5,
        "decoder output differs from nn.Transformer by {d}"
    );

    // Every parameter's gradient, cross-attention included.
    let grads = (out * &f["input.probe"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut checked = 0;
    for (name, var) in &w.vars {
        let want = &f[&format!("grad.{name}")];
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached {name}"));
        let d = max_abs_diff(got, want);
        let tol = 1e-4 * max_abs(want).max(1e-3);
        assert!(
            d <= tol,
            "gradient of {name} differs by {d} (tolerance {tol})"
        );
        checked += 1;
    }
    assert_eq!(checked, f.keys().filter(|k| k.starts_with("grad.")).count());
}

#[test]
fn cross_attention_slot_and_memory_must_agree() {
    let f = fixture();
    let w = weights(&f);
    let tgt = &f["input.tgt"];
    let causal = Mixing::Causal { rope: None };
    let e = w
        .decoder_block(0)
        .forward(tgt, &causal, None, None)
        .unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
    let mem = Memory {
        states: &f["input.src"],
        mask: None,
    };
    let e = w
        .encoder_block(0)
        .forward(tgt, &causal, Some(mem), None)
        .unwrap_err();
    assert!(e.to_string().contains("without cross-attention"), "{e}");
}
