#!/usr/bin/env python3
"""The peer of `tessera finetune chat`: the same LoRA recipe in PEFT + transformers (PyTorch).

Same base (the SmolLM2 GGUF, dequantized to f32 by transformers' GGUF loader), same data files,
same loss mask (the assistant's answer and its end-of-turn token, located by rendering the
conversation before it with the generation prompt), same batches of similar length, same
optimizer (AdamW, linear warmup/decay, clip 1.0), rank, alpha and targets. Reports examples/s and
tokens/s of the training steps, peak RSS, and dev loss and greedy exact match (teacher forcing:
an answer counts when the arg-max at each of its positions is its token) before and after.

    python scripts/sft_peft.py --gguf PATH --train train.jsonl --dev dev.jsonl [--out DIR]
"""
import argparse
import json
import random
import resource
import time

import torch


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encode(tok, msgs):
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=False)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    answer = [False] * len(ids)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = tok.apply_chat_template(msgs[:i], tokenize=True, add_generation_prompt=True)
        upto = tok.apply_chat_template(msgs[:i + 1], tokenize=True, add_generation_prompt=False)
        before = list(before["input_ids"] if hasattr(before, "keys") else before)
        upto = list(upto["input_ids"] if hasattr(upto, "keys") else upto)
        assert upto[:len(before)] == before and ids[:len(upto)] == upto
        span = upto[len(before):]
        end = len(span)
        if tok.eos_token_id in span:
            end = len(span) - span[::-1].index(tok.eos_token_id)
        for j in range(len(before), len(before) + end):
            answer[j] = True
    inputs = ids[:-1]
    targets = [ids[j] if answer[j] else -100 for j in range(1, len(ids))]
    return inputs, targets


def read(path, tok):
    out = []
    for line in open(path, encoding="utf-8"):
        if line.strip():
            out.append(encode(tok, json.loads(line)["messages"]))
    return out


def length_batches(lens, size, rng):
    # As tessera's length grouping (train::data::epoch_batches): shuffled, windows of 50 batches
    # sorted by length (longest first), cut, the batches shuffled.
    order = list(range(len(lens)))
    rng.shuffle(order)
    batches = []
    for w in range(0, len(order), size * 50):
        window = sorted(order[w:w + size * 50], key=lambda i: -lens[i])
        batches += [window[k:k + size] for k in range(0, len(window), size)]
    rng.shuffle(batches)
    return batches


def pad(exs, pad_id):
    t = max(len(e[0]) for e in exs)
    ids = torch.full((len(exs), t), pad_id, dtype=torch.long)
    tg = torch.full((len(exs), t), -100, dtype=torch.long)
    for i, (x, y) in enumerate(exs):
        ids[i, :len(x)] = torch.tensor(x)
        tg[i, :len(y)] = torch.tensor(y)
    return ids, tg


@torch.no_grad()
def score(model, exs, pad_id, batch):
    model.eval()
    loss_sum, tokens, correct = 0.0, 0, 0
    order = sorted(range(len(exs)), key=lambda i: len(exs[i][0]))
    for k in range(0, len(order), batch):
        b = [exs[i] for i in order[k:k + batch]]
        ids, tg = pad(b, pad_id)
        logits = model(input_ids=ids).logits.float()
        mask = tg != -100
        lp = torch.log_softmax(logits, -1)
        sel = tg.clamp(min=0)
        nll = -lp.gather(-1, sel.unsqueeze(-1)).squeeze(-1)
        loss_sum += nll[mask].sum().item()
        tokens += mask.sum().item()
        ok = ((logits.argmax(-1) == tg) | ~mask).all(-1)
        correct += ok.sum().item()
    model.train()
    return loss_sum / max(tokens, 1), correct / len(exs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--out")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--warmup-ratio", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-eval", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    import os
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig, get_peft_model
    d, f = os.path.dirname(os.path.abspath(a.gguf)), os.path.basename(a.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    train, dev = read(a.train, tok), read(a.dev, tok)
    pad_id = tok.eos_token_id
    res = {"train": len(train), "dev": len(dev)}
    if not a.no_eval:
        res["before_dev_loss"], res["before_exact_match"] = score(model, dev, pad_id, a.batch_size)
    cfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, bias="none",
                     target_modules=a.targets.split(","), task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    res["trainable"] = sum(p.numel() for p in trainable)
    rng = random.Random(a.seed)
    lens = [len(e[0]) for e in train]
    batches = []
    for _ in range(a.epochs):
        batches += length_batches(lens, a.batch_size, rng)
    if a.max_steps:
        batches = batches[:a.max_steps]
    total = len(batches)
    warmup = round(a.warmup_ratio * total)
    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    model.train()
    times, toks, exs_done = [], 0, 0
    t_all = time.perf_counter()
    for step, b in enumerate(batches):
        t0 = time.perf_counter()
        ids, tg = pad([train[i] for i in b], pad_id)
        out = model(input_ids=ids, labels=None)
        logits = out.logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), tg.view(-1),
                                                 ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if step > 0:  # the first step warms up
            times.append(dt)
            toks += sum(len(train[i][0]) for i in b)
            exs_done += len(b)
        if step % max(1, total // 10) == 0:
            print(f"step {step + 1}/{total} loss {loss.item():.4f}", flush=True)
    res["train_seconds"] = time.perf_counter() - t_all
    res["examples_per_s"] = exs_done / sum(times)
    res["tokens_per_s"] = toks / sum(times)
    res["peak_rss_mib"] = rss_mib()
    if not a.no_eval:
        res["after_dev_loss"], res["after_exact_match"] = score(model, dev, pad_id, a.batch_size)
    if a.out:
        model.save_pretrained(a.out)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
