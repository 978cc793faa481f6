#!/usr/bin/env python3
"""Training-throughput benchmark: a small GPT in plain PyTorch (nanoGPT-like), fp32, CPU.

tessera's copy of ../shared/bench/train_gpt_torch.py (same GPT, same flags, same final lines),
with a Llama option (`--arch llama`): RMSNorm, rotary positions (Hugging Face's half-split
layout), grouped-query attention (`--n-kv-head`), a SwiGLU MLP (`--n-inner`, default 704), no
biases, tied head: the layout of tessera's default `small` config. `tessera bench train --arch
llama` builds the same model with the same flags.

Model: token + learned position embeddings -> n_layer x [pre-LayerNorm causal self-attention
(F.scaled_dot_product_attention, is_causal=True) + pre-LayerNorm GELU MLP (4x)] -> final LayerNorm ->
LM head tied to the token embedding. Init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2*n_layer)).
Data: uniformly random token ids (fresh batch per step, generated before timing).
Optimizer: torch.optim.AdamW(lr, betas=(beta1, beta2)); weight decay on all 2-D tensors (Linear weights, token and
position embeddings), none on biases and LayerNorm weights (the nanoGPT convention). No LR schedule.
Throughput = batch_size * block_size * steps / (wall time of the timed steps), after --warmup untimed steps.
A step = zero_grad + forward + cross-entropy loss + backward + (optional grad clip) + optimizer.step.

Default config (the one quoted in README.md):
  --vocab-size 4096 --n-layer 4 --n-head 4 --n-embd 256 --block-size 128 --batch-size 16 --lr 3e-4
  --steps 20 --warmup 3 --threads 2

Output: one JSON line with the config and timings, then exactly these two final lines:
  tokens_per_s: N
  peak_rss_mib: N
(peak_rss_mib = getrusage ru_maxrss of this process.) The data are random ids, so no model or data set is needed.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # lets --help work without PyTorch; main() reports the missing package
    torch = nn = F = None

_Module = nn.Module if nn is not None else object


class CausalSelfAttention(_Module):
    def __init__(self, c):
        super().__init__()
        assert c.n_embd % c.n_head == 0
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head, self.n_embd, self.dropout = c.n_head, c.n_embd, c.dropout
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


def rms_norm(c):
    return nn.RMSNorm(c.n_embd, eps=1e-5)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LlamaAttention(_Module):
    def __init__(self, c):
        super().__init__()
        d = c.n_embd // c.n_head
        self.n_head, self.n_kv, self.d = c.n_head, c.n_kv_head, d
        self.q_proj = nn.Linear(c.n_embd, c.n_head * d, bias=False)
        self.k_proj = nn.Linear(c.n_embd, c.n_kv_head * d, bias=False)
        self.v_proj = nn.Linear(c.n_embd, c.n_kv_head * d, bias=False)
        self.o_proj = nn.Linear(c.n_head * d, c.n_embd, bias=False)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        t = torch.arange(c.block_size).float()
        f = torch.outer(t, inv)
        emb = torch.cat((f, f), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.d).transpose(1, 2)
        cos, sin = self.cos[:T], self.sin[:T]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_head)
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class SwiGLU(_Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.n_embd, c.n_inner, bias=False)
        self.up_proj = nn.Linear(c.n_embd, c.n_inner, bias=False)
        self.down_proj = nn.Linear(c.n_inner, c.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(_Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = rms_norm(c)
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = rms_norm(c)
        self.mlp = SwiGLU(c)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(_Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.n_embd)
        self.layers = nn.ModuleList([LlamaBlock(c) for _ in range(c.n_layer)])
        self.norm = rms_norm(c)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied embeddings
        self.apply(GPT._init)
        for n, p in self.named_parameters():
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def forward(self, idx, targets):
        x = self.embed_tokens(idx)
        for b in self.layers:
            x = b(x)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


class MLP(_Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU, as in nanoGPT
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(_Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(_Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.h = nn.ModuleList([Block(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied embeddings
        self.apply(self._init)
        for n, p in self.named_parameters():
            if n.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def _ticks():
    """(machine-wide busy ticks, this process's ticks) from /proc; None where /proc is unavailable."""
    try:
        with open("/proc/stat") as f:
            v = list(map(int, f.readline().split()[1:]))
        with open("/proc/self/stat") as f:
            fl = f.read().rsplit(")", 1)[1].split()
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], int(fl[11]) + int(fl[12])
    except (OSError, IndexError, ValueError):
        return None


def peak_rss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, KiB on Linux


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    ap.add_argument("--n-kv-head", type=int, default=None, help="llama: key/value heads (default: n-head / 2)")
    ap.add_argument("--n-inner", type=int, default=704, help="llama: SwiGLU width")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--weight-decay", type=float, default=0.1, help="applied to 2-D weights only (matmuls, embeddings)")
    ap.add_argument("--grad-clip", type=float, default=0.0, help="0 = off")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True, help="biases in Linear/LayerNorm")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    c = ap.parse_args()
    if torch is None:
        sys.exit("train_gpt_torch.py needs PyTorch (pip install torch); see README.md")

    torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)
    if c.n_kv_head is None:
        c.n_kv_head = max(1, c.n_head // 2)
    model = GPT(c) if c.arch == "gpt2" else Llama(c)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # tied weight counted once
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, betas=(c.beta1, c.beta2))

    g = torch.Generator().manual_seed(c.seed + 1)
    total = c.warmup + c.steps
    data = torch.randint(0, c.vocab_size, (total, c.batch_size, c.block_size + 1), generator=g)

    def step(i):
        x, y = data[i, :, :-1], data[i, :, 1:]
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        opt.step()
        return loss.item()

    losses, step_times = [], []
    for i in range(c.warmup):
        losses.append(step(i))
    k0 = _ticks()
    t0 = time.perf_counter()
    for i in range(c.warmup, total):
        ts = time.perf_counter()
        losses.append(step(i))
        step_times.append(time.perf_counter() - ts)
    wall = time.perf_counter() - t0
    k1 = _ticks()
    cpu = None
    if k0 and k1:
        hz = os.sysconf("SC_CLK_TCK")
        ds, dp = k1[0] - k0[0], k1[1] - k0[1]
        # own_cores: cores this process used; foreign_cores: cores other processes used meanwhile (disturbance)
        cpu = {"own_cores_avg": round(dp / hz / wall, 2), "foreign_cores_avg": round(max(0, ds - dp) / hz / wall, 2)}
    toks = c.batch_size * c.block_size * c.steps
    peak = peak_rss_mib()
    res = {
        "engine": f"PyTorch {torch.__version__} fp32 eager, CPU, {torch.get_num_threads()} threads",
        "cpu": cpu_name(),
        "config": {k: getattr(c, k) for k in ["arch", "n_kv_head", "n_inner", "vocab_size", "n_layer", "n_head", "n_embd", "block_size", "batch_size", "lr",
                                              "beta1", "beta2", "weight_decay", "grad_clip", "dropout", "bias", "steps",
                                              "warmup", "threads", "seed"]},
        "n_params": n_params,
        "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4), "ln_vocab": round(math.log(c.vocab_size), 4),
        "timed_wall_s": round(wall, 4),
        "tokens_per_s": round(toks / wall, 1),
        "step_ms_median": round(1000 * statistics.median(step_times), 2),
        "step_ms_min": round(1000 * min(step_times), 2),
        "cpu_timed_window": cpu,
        "peak_rss_mib": round(peak, 1),
    }
    if c.json_out:
        with open(c.json_out, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res))
    print(f"tokens_per_s: {toks / wall:.1f}")
    print(f"peak_rss_mib: {peak:.1f}", flush=True)


if __name__ == "__main__":
    main()
