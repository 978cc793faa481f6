#!/usr/bin/env python3
"""Fine-tuning throughput of the equivalent Hugging Face transformers + PyTorch loop (issue 5).

The peer of `tessera bench finetune`: the same model, data, batch size, maximum length, batching
(shuffled, each batch padded to its longest text, as `DataCollatorWithPadding` does) and optimizer
(AdamW, linear schedule). Times forward + backward + AdamW step after warm-up steps and prints
`examples_per_s: N` as its last line.

    python3 scripts/finetune_hf_speed.py --model ~/.cache/tessera/models/all-minilm-l6-v2 \
        --task classify --data ../shared/data/classify/fine-foods/train.jsonl
    python3 scripts/finetune_hf_speed.py --model ... --task ner --data ../shared/data/ner/twitter/train.conll
"""
import argparse
import json
import random
import resource
import time

import torch
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification,
                          AutoTokenizer, get_linear_schedule_with_warmup)


def read_conll(path):
    sents, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line:
            if words:
                sents.append((words, tags))
            words, tags = [], []
            continue
        parts = line.split()
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        sents.append((words, tags))
    return sents


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", choices=["classify", "ner"], default="classify")
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)

    if a.task == "classify":
        rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
        labels = sorted({r["label"] for r in rows})
        model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
        items = [(r["text"], labels.index(r["label"])) for r in rows]

        def batch(chunk):
            enc = tok([t for t, _ in chunk], truncation=True, max_length=a.max_len,
                      padding="longest", return_tensors="pt")
            enc["labels"] = torch.tensor([y for _, y in chunk])
            return enc
    else:
        sents = read_conll(a.data)
        labels = sorted({t for _, ts in sents for t in ts})
        model = AutoModelForTokenClassification.from_pretrained(a.model, num_labels=len(labels))
        items = sents

        def batch(chunk):
            enc = tok([w for w, _ in chunk], is_split_into_words=True, truncation=True,
                      max_length=a.max_len, padding="longest", return_tensors="pt")
            lab = []
            for i, (_, ts) in enumerate(chunk):
                prev, row = None, []
                for wid in enc.word_ids(i):
                    # First-piece labelling: later pieces and specials are ignored (-100).
                    row.append(-100 if wid is None or wid == prev else labels.index(ts[wid]))
                    prev = wid
                lab.append(row)
            enc["labels"] = torch.tensor(lab)
            return enc

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    total = a.warmup + a.steps
    sched = get_linear_schedule_with_warmup(opt, max(1, total // 10), total)
    order = list(range(len(items)))
    rng.shuffle(order)
    batches = [batch([items[i] for i in order[j:j + a.batch]])
               for j in range(0, total * a.batch, a.batch)]
    t0 = None
    for s, enc in enumerate(batches):
        if s == a.warmup:
            t0 = time.perf_counter()
        out = model(**enc)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[a.warmup:])
    padded = sum(b["input_ids"].numel() for b in batches[a.warmup:])
    print(f"steps: {a.steps}  batch: {a.batch}  real tokens: {tokens}  padded tokens: {padded}")
    print(f"final loss: {out.loss.item():.4f}")
    print(f"peak_rss_mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
    print(f"examples_per_s: {a.steps * a.batch / dt:.2f}")


if __name__ == "__main__":
    main()
