#!/usr/bin/env python3
"""Text-classification quality of the Hugging Face transformers + PyTorch recipe on tessera's own
dev split (issue 5), so the two are compared on the same examples.

The issue's reference figures were measured on held-back test sets; tessera reports dev splits
made from train.jsonl (`--split-seed`). This script makes the same split (a port of tessera's
seeded shuffle: xoshiro256** seeded by splitmix64, Fisher-Yates, the last 10% to dev), fine-tunes
with `Trainer`'s defaults (AdamW lr 5e-5, weight decay 0, no warmup, linear decay, gradient
clipping at 1.0, batch 16, head truncation at --max-len, the model's dropout) and prints the dev
accuracy and macro-F1 after each epoch.

    python3 scripts/hf_finetune_quality.py --model ~/.cache/tessera/models/all-minilm-l6-v2 \\
        --data ../shared/data/classify/spam/train.jsonl --max-len 256 --epochs 1 --seed 1 --split-seed 42
"""
import argparse
import json
import random
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

M = (1 << 64) - 1


def _splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return x, z ^ (z >> 31)


def _rotl(v, k):
    return ((v << k) | (v >> (64 - k))) & M


class Rng:
    """tessera::util::rng::Rng (xoshiro256**), enough of it for the dev split."""

    def __init__(self, seed):
        self.s = []
        x = seed
        for _ in range(4):
            x, z = _splitmix(x)
            self.s.append(z)

    def next_u64(self):
        s = self.s
        r = (_rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 17) & M
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return r

    def below(self, n):
        zone = M - (M % n)
        while True:
            x = self.next_u64()
            if x < zone:
                return x % n


def split_dev(n, fraction, seed):
    """tessera::tasks::data::split_dev: (train indices, dev indices)."""
    idx = list(range(n))
    rng = Rng(seed)
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        idx[i], idx[j] = idx[j], idx[i]
    n_dev = min(max(round(n * fraction), 1), n - 1)
    return idx[: n - n_dev], idx[n - n_dev:]


def macro_f1(gold, pred, labels):
    f1s = []
    for l in labels:
        tp = sum(g == l and p == l for g, p in zip(gold, pred))
        fp = sum(g != l and p == l for g, p in zip(gold, pred))
        fn = sum(g == l and p != l for g, p in zip(gold, pred))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1s) / len(f1s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--split-seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
    tr, dv = split_dev(len(rows), 0.1, a.split_seed)
    labels = sorted({r["label"] for r in rows})
    lid = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=lid)

    def encode(ix):
        texts = [rows[i]["text"] for i in ix]
        enc = tok(texts, truncation=True, max_length=a.max_len, padding=True, return_tensors="pt")
        enc["labels"] = torch.tensor([lid[rows[i]["label"]] for i in ix])
        return enc

    steps = (len(tr) + a.batch - 1) // a.batch * a.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = tr[:]
        random.shuffle(order)
        t0 = time.time()
        for s in range(0, len(order), a.batch):
            loss = model(**encode(order[s:s + a.batch])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        rate = len(order) / (time.time() - t0)
        model.eval()
        pred = []
        with torch.no_grad():
            for s in range(0, len(dv), 32):
                enc = encode(dv[s:s + 32])
                enc.pop("labels")
                pred += model(**enc).logits.argmax(-1).tolist()
        gold = [lid[rows[i]["label"]] for i in dv]
        acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
        print(json.dumps({"epoch": epoch, "dev": len(dv), "accuracy": acc,
                          "macro_f1": macro_f1(gold, pred, range(len(labels))),
                          "train_examples_per_s": rate}), flush=True)


if __name__ == "__main__":
    main()
