#!/usr/bin/env python3
"""Translation-training benchmark: the PyTorch peer of `tessera train --task translation`.

Trains the same Marian-style encoder-decoder as tessera's `configs/seq2seq-small.json` on the same
data, with the same tokenizer, the same dev split and the same recipe, and reports training
throughput (target tokens per training second) and a BLEU-vs-training-minutes curve, so the two
can be compared side by side under one time budget.

Run (after a tessera run has written its split and tokenizer into runs/en-es):

    ~/.cache/tessera-peers/venv/bin/python scripts/train_seq2seq_torch.py \\
        --tessera-run runs/en-es --max-minutes 60

Inputs, read from the tessera run directory (--tessera-run DIR):
  DIR/split.json                 src/tgt column names, dev_groups (whole books), eval_sentences
  DIR/checkpoint/tokenizer.json  the byte-level BPE tessera trained (eos = <|endoftext|>, pad = <|pad|>)
and the parallel TSV (--data, header `ref<TAB>en<TAB>es`, book = ref before the first '.').
Dev pairs are the rows of the dev books in file order; every other row is a training pair.
Source = encode(src) + [eos]; decoder input = [pad] + encode(tgt) (pad is the start token, as in
Marian); labels = encode(tgt) + [eos]. Training pairs whose source or target (before eos) is longer
than 128 tokens are left out; dev pairs are cut to 128/128 tokens (as tessera does), while BLEU
references are the untouched dev target texts.

Model (d_model 256, 3+3 layers, 4 heads, FFN 1024, SiLU, vocab = tokenizer size, max positions 256):
  x = dropout(E[ids] * sqrt(d_model) + sinusoid[pos])        (half-split sin | cos, Marian layout)
  torch.nn.TransformerEncoder/-Decoder of nn.TransformerEncoderLayer/-DecoderLayer
    (batch_first=True, norm_first=False: post-norm, LayerNorm eps 1e-5 after each residual add,
    dropout 0.1 on the residual branches)
  logits = h @ E^T   (one embedding matrix for encoder input, decoder input and output; no bias)
Two deliberate adjustments to PyTorch's stock layers, so that the model is tessera's/Marian's:
  * no final LayerNorm after either stack (nn.Transformer would add one; we build the stacks
    ourselves with norm=None and hand them to nn.Transformer as custom_encoder/custom_decoder);
  * attention-probability dropout and the dropout inside the FFN are 0 (Marian's attention_dropout
    and activation_dropout); the stock layers would apply `dropout` there too.
Init: E ~ N(0, 0.02); everything else as nn.Transformer leaves it (xavier-uniform matrices, zero
biases, unit LayerNorms). fp32 on CPU.

Recipe: AdamW(lr 7e-4, betas (0.9, 0.98), eps 1e-9, weight_decay 0); lr at step s (0-based):
lr*(s+1)/400 for s < 400, then cosine to lr/10 at max_steps; gradient clipping at global norm 1.0;
cross-entropy with label smoothing 0.1, averaged over real target tokens. Batches by token count:
each epoch the training pairs are shuffled (seeded), sorted stably by (source length, label length)
and cut greedily so that rows * longest source <= 4096 and rows * longest labels <= 4096; then the
batch order is shuffled. (Python's RNG, not tessera's: same procedure, different permutations.)

Evaluation every --eval-every steps and at the end (in eval mode: no dropout): dev loss over every
dev pair without label smoothing, then greedy translations of the first eval_sentences dev pairs
(sorted by length, 32 at a time, at most 255 new tokens, stopping a batch once every row has
produced eos; incremental decoding with a key/value cache), decoded with tokenizer.decode of the
ids before eos, scored with sacrebleu.corpus_bleu (13a) and sacrebleu.corpus_chrf. Evaluation time
is kept out of the training clock and reported separately (eval_seconds).

Training time (the --max-minutes budget and tokens/s) counts batch building, forward, backward,
clipping and the optimizer step only. Stops at --max-minutes of training time or --max-steps.

Output: a line per evaluation
    step S | train_min M | dev_loss L | BLEU B | chrF C | tok/s T
and --out (JSON lines): one object per evaluation {step, train_minutes, dev_loss, bleu, chrf,
tokens_per_s, eval_seconds}, then {"final": true, steps, train_minutes, tokens_per_s, best_bleu,
peak_rss_mib, eval_minutes}. tokens_per_s = target tokens (eos included) / training seconds so far.
peak_rss_mib = getrusage(RUSAGE_SELF).ru_maxrss / 1024 (Linux reports KiB).

Known differences from tessera: the random permutations (epoch shuffles, dropout masks, init
draws) differ; the BLEU/chrF implementation is sacrebleu's rather than tessera's own
(tessera_metrics mirrors sacrebleu's defaults); otherwise none intended.
"""
import argparse
import json
import math
import os
import random
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# tessera's configs/seq2seq-small.json
D_MODEL = 256
N_HEAD = 4
ENC_LAYERS = 3
DEC_LAYERS = 3
FFN = 1024
DROPOUT = 0.1
MAX_POS = 256
INIT_STD = 0.02
# its "training" block
MAX_TOKENS = 4096
LR = 7e-4
WARMUP = 400
LABEL_SMOOTHING = 0.1
GRAD_CLIP = 1.0
MAX_LEN = 128
DECODE_BATCH = 32


# ----------------------------------------------------------------------------------- data


def read_pairs(path, src, tgt):
    """(book, src text, tgt text) per row, file order; empty lines skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        try:
            ir, isrc, itgt = header.index("ref"), header.index(src), header.index(tgt)
        except ValueError:
            sys.exit(f"{path}: header {header} lacks one of ref, {src}, {tgt}")
        for n, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) <= max(ir, isrc, itgt):
                sys.exit(f"{path}:{n}: expected {len(header)} columns, got {len(cols)}")
            ref = cols[ir]
            rows.append((ref.split(".", 1)[0], cols[isrc], cols[itgt]))
    return rows


def token_batches(lens, max_tokens, rng):
    """tessera's batching: shuffle, stable sort by (src len, label len), greedy cut, shuffle."""
    order = list(range(len(lens)))
    rng.shuffle(order)
    order.sort(key=lambda i: lens[i])
    batches, cur, ms, mt = [], [], 0, 0
    for i in order:
        s, t = lens[i]
        ns, nt = max(ms, s), max(mt, t)
        rows = len(cur) + 1
        if cur and (rows * ns > max_tokens or rows * nt > max_tokens):
            batches.append(cur)
            cur, ms, mt = [], s, t
        else:
            ms, mt = ns, nt
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def make_batch(pairs, idx, pad, eos):
    """Right-padded tensors: src (B,S), src padding mask (True = pad), decoder input (B,T),
    labels (B,T) with -100 at padding, and the number of real label tokens."""
    b = len(idx)
    s_len = max(len(pairs[i][0]) for i in idx)
    t_len = max(len(pairs[i][1]) for i in idx) + 1
    src = torch.full((b, s_len), pad, dtype=torch.long)
    tgt_in = torch.full((b, t_len), pad, dtype=torch.long)
    labels = torch.full((b, t_len), -100, dtype=torch.long)
    tokens = 0
    for r, i in enumerate(idx):
        s, y = pairs[i]
        src[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[r, 1 : len(y) + 1] = torch.tensor(y, dtype=torch.long)
        labels[r, : len(y) + 1] = torch.tensor(y + [eos], dtype=torch.long)
        tokens += len(y) + 1
    src_pad = torch.zeros((b, s_len), dtype=torch.bool)
    for r, i in enumerate(idx):
        src_pad[r, len(pairs[i][0]) :] = True
    return src, src_pad, tgt_in, labels, tokens


# ----------------------------------------------------------------------------------- model


def sinusoids(n_pos, dim):
    """Marian's fixed positions: column j < dim/2 = sin(p / 10000^(2j/dim)), column dim/2 + j = cos."""
    half = dim // 2
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    j = torch.arange(half, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2.0 * j / dim)
    out = torch.zeros(n_pos, dim, dtype=torch.float64)
    out[:, :half] = torch.sin(angle)
    out[:, half : 2 * half] = torch.cos(angle)
    return out.float()


class Seq2Seq(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, D_MODEL)
        self.register_buffer("pos", sinusoids(MAX_POS, D_MODEL), persistent=False)
        self.drop = nn.Dropout(DROPOUT)
        self.scale = math.sqrt(D_MODEL)
        common = dict(d_model=D_MODEL, nhead=N_HEAD, dim_feedforward=FFN, dropout=DROPOUT,
                      activation=F.silu, layer_norm_eps=1e-5, batch_first=True, norm_first=False)
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(**common), ENC_LAYERS, norm=None,
                                    enable_nested_tensor=False)
        dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(**common), DEC_LAYERS, norm=None)
        self.transformer = nn.Transformer(d_model=D_MODEL, nhead=N_HEAD, dim_feedforward=FFN,
                                          dropout=DROPOUT, activation=F.silu, batch_first=True,
                                          norm_first=False, custom_encoder=enc, custom_decoder=dec)
        # Marian: attention_dropout = activation_dropout = 0 (the stock layers use `dropout` there).
        for layer in list(enc.layers) + list(dec.layers):
            layer.self_attn.dropout = 0.0
            if hasattr(layer, "multihead_attn"):
                layer.multihead_attn.dropout = 0.0
            layer.dropout = nn.Dropout(0.0)
        nn.init.normal_(self.embed.weight, mean=0.0, std=INIT_STD)

    def embed_at(self, ids, start=0):
        t = ids.shape[1]
        return self.drop(self.embed(ids) * self.scale + self.pos[start : start + t])

    def encode(self, src, src_pad):
        return self.transformer.encoder(self.embed_at(src), src_key_padding_mask=src_pad)

    def hidden(self, src, src_pad, tgt_in):
        t = tgt_in.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        return self.transformer(self.embed_at(src), self.embed_at(tgt_in), tgt_mask=causal,
                                src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad,
                                tgt_is_causal=True)

    def loss(self, src, src_pad, tgt_in, labels, label_smoothing):
        h = self.hidden(src, src_pad, tgt_in)
        keep = labels != -100
        logits = h[keep] @ self.embed.weight.t()  # only real positions reach the tied head
        return F.cross_entropy(logits, labels[keep], label_smoothing=label_smoothing)

    # ---- greedy decoding with a key/value cache (eval mode only)

    @torch.no_grad()
    def greedy(self, src, src_pad, start, eos, max_new):
        b = src.shape[0]
        mem = self.encode(src, src_pad)
        # cross-attention keys/values once per layer; boolean mask True = may attend
        cross_mask = (~src_pad)[:, None, None, :]
        layers = self.transformer.decoder.layers
        cross_kv, self_k, self_v = [], [[] for _ in layers], [[] for _ in layers]
        for layer in layers:
            a = layer.multihead_attn
            k = F.linear(mem, a.in_proj_weight[D_MODEL : 2 * D_MODEL], a.in_proj_bias[D_MODEL : 2 * D_MODEL])
            v = F.linear(mem, a.in_proj_weight[2 * D_MODEL :], a.in_proj_bias[2 * D_MODEL :])
            cross_kv.append((heads(k), heads(v)))
        tok = torch.full((b, 1), start, dtype=torch.long)
        out = torch.empty((b, 0), dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        for step in range(max_new):
            x = self.embed_at(tok, start=step)  # (B, 1, D)
            for li, layer in enumerate(layers):
                a = layer.self_attn
                q, k, v = F.linear(x, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
                self_k[li].append(heads(k))
                self_v[li].append(heads(v))
                att = F.scaled_dot_product_attention(heads(q), torch.cat(self_k[li], 2),
                                                     torch.cat(self_v[li], 2))
                x = layer.norm1(x + a.out_proj(merge(att)))
                c = layer.multihead_attn
                q = F.linear(x, c.in_proj_weight[:D_MODEL], c.in_proj_bias[:D_MODEL])
                att = F.scaled_dot_product_attention(heads(q), *cross_kv[li], attn_mask=cross_mask)
                x = layer.norm2(x + c.out_proj(merge(att)))
                x = layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))
            nxt = (x[:, -1] @ self.embed.weight.t()).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == eos
            if bool(done.all()):
                break
            tok = nxt[:, None]
        return out


def heads(x):
    b, t, _ = x.shape
    return x.view(b, t, N_HEAD, D_MODEL // N_HEAD).transpose(1, 2)


def merge(x):
    b, _, t, _ = x.shape
    return x.transpose(1, 2).reshape(b, t, D_MODEL)


# ----------------------------------------------------------------------------------- train


def lr_at(step, max_steps, lr=LR, warmup=WARMUP):
    """tessera's Schedule::Cosine with min_lr = lr/10."""
    min_lr = lr / 10
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    progress = (step - warmup) / max(max_steps - warmup, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


@torch.no_grad()
def evaluate(model, dev, dev_refs, n_sent, tok, pad, eos):
    import sacrebleu

    model.eval()
    lens = [(len(s), len(y) + 1) for s, y in dev]
    loss_sum, tokens = 0.0, 0
    for idx in token_batches(lens, MAX_TOKENS, random.Random(0)):
        src, src_pad, tgt_in, labels, n = make_batch(dev, idx, pad, eos)
        loss_sum += model.loss(src, src_pad, tgt_in, labels, 0.0).item() * n
        tokens += n
    dev_loss = loss_sum / max(tokens, 1)

    n = len(dev) if n_sent == 0 else min(n_sent, len(dev))
    order = sorted(range(n), key=lambda i: len(dev[i][0]))
    hyps = [None] * n
    max_new = min(256, MAX_POS - 1)
    for c in range(0, n, DECODE_BATCH):
        chunk = order[c : c + DECODE_BATCH]
        srcs = [dev[i][0] for i in chunk]
        s_len = max(len(s) for s in srcs)
        src = torch.full((len(chunk), s_len), pad, dtype=torch.long)
        src_pad = torch.ones((len(chunk), s_len), dtype=torch.bool)
        for r, s in enumerate(srcs):
            src[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            src_pad[r, : len(s)] = False
        out = model.greedy(src, src_pad, pad, eos, max_new).tolist()
        for i, ids in zip(chunk, out):
            if eos in ids:
                ids = ids[: ids.index(eos)]
            hyps[i] = tok.decode(ids)
    refs = dev_refs[:n]
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    model.train()
    return dev_loss, bleu, chrf, hyps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera-run", required=True, help="tessera run dir (split.json, checkpoint/tokenizer.json)")
    ap.add_argument("--data", default="../shared/data/translate/en-es-bible/train.tsv")
    ap.add_argument("--max-minutes", type=float, default=60.0, help="training-time budget (eval excluded)")
    ap.add_argument("--max-steps", type=int, default=6000, help="also the end of the cosine schedule")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default="seq2seq_torch.jsonl")
    ap.add_argument("--eval-sentences", type=int, default=None, help=argparse.SUPPRESS)  # overrides split.json (0 = all)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from tokenizers import Tokenizer

    with open(os.path.join(args.tessera_run, "split.json")) as f:
        split = json.load(f)
    tok = Tokenizer.from_file(os.path.join(args.tessera_run, "checkpoint", "tokenizer.json"))
    eos, pad = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|pad|>")
    if eos is None or pad is None:
        sys.exit("tokenizer lacks <|endoftext|> or <|pad|>")
    vocab = tok.get_vocab_size()
    n_sent = split.get("eval_sentences", 300) if args.eval_sentences is None else args.eval_sentences

    rows = read_pairs(args.data, split["src"], split["tgt"])
    dev_groups = set(split["dev_groups"])
    enc = lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    src_ids = enc([r[1] for r in rows])
    tgt_ids = enc([r[2] for r in rows])
    max_src, max_tgt = min(MAX_LEN, MAX_POS), min(MAX_LEN, MAX_POS - 1)
    train, dev, dev_refs, skipped, n_train_rows = [], [], [], 0, 0
    for (book, _, tgt_text), s, y in zip(rows, src_ids, tgt_ids):
        s = s + [eos]
        if book in dev_groups:
            dev.append((s[:max_src], y[:max_tgt]))
            dev_refs.append(tgt_text)
        else:
            n_train_rows += 1
            if len(s) > max_src or len(y) > max_tgt:
                skipped += 1
            else:
                train.append((s, y))
    for key, got in (("train_pairs", n_train_rows), ("dev_pairs", len(dev))):
        if key in split and split[key] != got:
            print(f"warning: split.json says {key}={split[key]}, found {got}", file=sys.stderr)
    if not train or not dev:
        sys.exit("no training or no dev pairs")

    model = Seq2Seq(vocab)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    print(f"torch {torch.__version__}, {args.threads} threads | {n_params / 1e6:.2f}M params, vocab {vocab} | "
          f"train {len(train)} pairs ({skipped} over {MAX_LEN} tokens left out) | dev {len(dev)} pairs, "
          f"BLEU on {n_sent or len(dev)} | budget {args.max_minutes} min / {args.max_steps} steps", flush=True)

    lens = [(len(s), len(y) + 1) for s, y in train]
    rng = random.Random(args.seed)
    out = open(args.out, "w")
    step, train_s, eval_s, tokens, best_bleu, last_eval = 0, 0.0, 0.0, 0, None, -1
    budget_s = args.max_minutes * 60.0

    def run_eval():
        nonlocal eval_s, best_bleu, last_eval
        t0 = time.perf_counter()
        dev_loss, bleu, chrf, hyps = evaluate(model, dev, dev_refs, n_sent, tok, pad, eos)
        dt = time.perf_counter() - t0
        eval_s += dt
        last_eval = step
        best_bleu = bleu if best_bleu is None else max(best_bleu, bleu)
        tps = tokens / train_s if train_s > 0 else 0.0
        print(f"step {step} | train_min {train_s / 60:.2f} | dev_loss {dev_loss:.4f} | BLEU {bleu:.2f} | "
              f"chrF {chrf:.2f} | tok/s {tps:.0f}   (eval {dt:.1f}s; hyp[0]: {hyps[0][:80]!r})", flush=True)
        out.write(json.dumps({"step": step, "train_minutes": train_s / 60, "dev_loss": dev_loss,
                              "bleu": bleu, "chrf": chrf, "tokens_per_s": tps, "eval_seconds": dt}) + "\n")
        out.flush()

    finished = False
    while not finished:
        for idx in token_batches(lens, MAX_TOKENS, rng):
            t0 = time.perf_counter()
            src, src_pad, tgt_in, labels, n = make_batch(train, idx, pad, eos)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.max_steps)
            loss = model.loss(src, src_pad, tgt_in, labels, LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            train_s += time.perf_counter() - t0
            tokens += n
            step += 1
            if not math.isfinite(loss.item()):
                sys.exit(f"step {step}: loss is {loss.item()}")
            if step % args.eval_every == 0:
                run_eval()
            if train_s >= budget_s or step >= args.max_steps:
                finished = True
                break
    if last_eval != step:
        run_eval()

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    final = {"final": True, "steps": step, "train_minutes": train_s / 60,
             "tokens_per_s": tokens / train_s if train_s > 0 else 0.0, "best_bleu": best_bleu,
             "peak_rss_mib": peak, "eval_minutes": eval_s / 60}
    out.write(json.dumps(final) + "\n")
    out.close()
    print(f"done: {step} steps in {train_s / 60:.2f} training min ({eval_s / 60:.2f} min evaluating) | "
          f"tok/s {final['tokens_per_s']:.0f} | best BLEU {best_bleu:.2f} | peak RSS {peak:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
