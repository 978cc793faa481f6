#!/usr/bin/env python3
"""Make the golden-gradient fixtures ("the llm.c way") for crates/tessera/tests/golden_grads.rs.

For three tiny models built with transformers classes from a seeded random init (nothing is
downloaded) it runs, in fp32 on the CPU with dropout off and eager attention:

  - gpt2:  GPT2LMHeadModel (tied head), mean next-token cross-entropy
  - llama: LlamaForCausalLM (GQA, untied head), mean next-token cross-entropy
  - bert:  BertForSequenceClassification (pooler + classifier), mean cross-entropy over the
           batch, on a padded batch with an attention mask (tessera packs the same sequences)

one forward pass, one backward pass and ONE torch.optim.AdamW step, and writes per model

  crates/tessera/tests/fixtures/golden_grads/<arch>/config.json      the HF config
  crates/tessera/tests/fixtures/golden_grads/<arch>/golden.json      loss, optimizer, versions
  crates/tessera/tests/fixtures/golden_grads/<arch>/golden.safetensors
      <name>          initial weights (HF names; a tied head is stored once, as the embedding)
      grad.<name>     d loss / d <name> (the tied embedding's includes the head's part)
      after.<name>    the weights after one AdamW step
      input.*         the batch (int64), loss (f32 scalar)

The loss is defined as tessera defines it: for the LMs `Transformer::loss(x, y)` with
x = seq[:, :-1], y = seq[:, 1:] (the trainer's Batcher windows), the mean over all B*T tokens;
for BERT the fine-tune objective's `cross_entropy(classifier(tanh(pooler(h[CLS]))), labels)`.
Weight decay goes to exactly the parameters tessera decays (`ParamSpec::decay`: projection
matrices, the untied LM head, the pooler and classifier weights; not embeddings, norms or
biases), as two AdamW parameter groups; the test checks the two lists agree.

Usage:
    ~/.cache/tessera-peers/venv/bin/python scripts/golden_grads.py [OUT_DIR]
(default OUT_DIR: crates/tessera/tests/fixtures/golden_grads). Needs torch, transformers,
safetensors; a rerun with the same versions reproduces the files byte for byte.
"""
import json
import os
import sys

import safetensors
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "crates/tessera/tests/fixtures/golden_grads")

# One step large enough to see (Adam's first step moves every weight with a gradient by ~lr).
LR = 1e-2
# tessera's defaults: `TrainConfig` for language modelling, `finetune` for classification.
LM_OPT = {"lr": LR, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
CLS_OPT = {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}

B, T = 2, 8


def reinit(model, seed):
    """Seeded weights independent of transformers' init code: matrices and embeddings
    N(0, 0.1^2), norm weights 1 + N(0, 0.1^2), biases N(0, 0.05^2) (non-trivial norms and
    biases so that their gradients and updates are tested too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.dim() >= 2:
                p.copy_(noise * 0.1)
            elif name.endswith("bias"):
                p.copy_(noise * 0.05)
            else:  # norm weights (LayerNorm, RMSNorm)
                p.copy_(1.0 + noise * 0.1)


def decayed(arch, name, p):
    """tessera's `ParamSpec::decay` for this parameter."""
    if p.dim() < 2:
        return False  # biases, norm weights, the MLM/classifier biases
    embeddings = {
        "gpt2": ("transformer.wte.weight", "transformer.wpe.weight"),
        "llama": ("model.embed_tokens.weight",),
        "bert": (
            "bert.embeddings.word_embeddings.weight",
            "bert.embeddings.position_embeddings.weight",
            "bert.embeddings.token_type_embeddings.weight",
        ),
    }[arch]
    return name not in embeddings


def run(arch, model, opt_cfg, loss_fn, inputs, out_dir):
    model.train()  # dropout is 0 everywhere; train mode as tessera's trainer
    params = list(model.named_parameters())  # a tied head appears once, as the embedding
    init = {n: p.detach().clone() for n, p in params}
    loss = loss_fn(model)
    loss.backward()
    grads = {}
    for n, p in params:
        if p.grad is None:
            raise SystemExit(f"{arch}: {n} got no gradient")
        grads[n] = p.grad.detach().clone()
    decay = [n for n, p in params if decayed(arch, n, p)]
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if n in decay], "weight_decay": opt_cfg["weight_decay"]},
            {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
        ],
        lr=opt_cfg["lr"],
        betas=(opt_cfg["beta1"], opt_cfg["beta2"]),
        eps=opt_cfg["eps"],
        foreach=False,  # the plain single-tensor reference loop
        fused=False,
    )
    opt.step()
    tensors = {}
    for n, _ in params:
        tensors[n] = init[n].contiguous()
        tensors[f"grad.{n}"] = grads[n].contiguous()
        tensors[f"after.{n}"] = dict(model.named_parameters())[n].detach().contiguous()
    for k, v in inputs.items():
        tensors[f"input.{k}"] = v.contiguous()
    tensors["loss"] = loss.detach().reshape(())
    d = os.path.join(out_dir, arch)
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "golden.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    # tessera reads `rope_theta` at the top level (transformers 5 nests it in rope_parameters).
    if arch == "llama":
        rp = cfg.get("rope_parameters") or {}
        cfg["rope_theta"] = rp.get("rope_theta", cfg.get("rope_theta"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    meta = {
        "generated_by": "scripts/golden_grads.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
        },
        "class": type(model).__name__,
        "loss": float(loss.item()),
        "optimizer": dict(opt_cfg, implementation="torch.optim.AdamW(foreach=False)", steps=1),
        "decay": decay,
        "parameters": [n for n, _ in params],
    }
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{arch}: loss {loss.item():.6f}, {len(params)} parameters, "
          f"{sum(p.numel() for _, p in params)} scalars")


def lm_loss(x, y):
    def f(model):
        logits = model(input_ids=x).logits  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return f


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(1234)

    # GPT-2: tied head, learned positions, LayerNorm, gelu_new, fused qkv (Conv1D layout).
    cfg = GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, n_inner=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0,
    )
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="eager")
    reinit(model, 1)
    seq = torch.randint(0, 64, (B, T + 1), generator=g)
    x, y = seq[:, :-1], seq[:, 1:]
    run("gpt2", model, LM_OPT, lm_loss(x, y), {"ids": x, "targets": y}, out_dir)

    # Llama: rotary, RMSNorm, SwiGLU, grouped-query attention (4 heads, 2 kv heads), untied head.
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=16,
        rms_norm_eps=1e-6, rope_theta=10000.0, attention_dropout=0.0,
        tie_word_embeddings=False, pad_token_id=None, bos_token_id=0, eos_token_id=0,
    )
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager")
    reinit(model, 2)
    seq = torch.randint(0, 64, (B, T + 1), generator=g)
    x, y = seq[:, :-1], seq[:, 1:]
    run("llama", model, LM_OPT, lm_loss(x, y), {"ids": x, "targets": y}, out_dir)

    # BERT sequence classification (tessera's fine-tune objective), 3 labels, a padded batch
    # of three sequences (lengths 8, 5, 6). Token 0 is [PAD] and never a real token.
    cfg = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16, type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12, pad_token_id=0, num_labels=3,
    )
    model = BertForSequenceClassification._from_config(cfg, attn_implementation="eager")
    reinit(model, 3)
    lens = [8, 5, 6]
    ids = torch.randint(1, 64, (len(lens), T), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lens):
        mask[i, :n] = 1
    ids = ids * mask  # padding: id 0
    labels = torch.tensor([2, 0, 1])

    def bert_loss(model):
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, 3)
        return F.cross_entropy(logits, labels)

    run("bert", model, CLS_OPT, bert_loss,
        {"ids": ids, "attention_mask": mask, "labels": labels}, out_dir)


if __name__ == "__main__":
    main()
