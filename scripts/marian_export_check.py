"""Check that a model directory tessera wrote (`tessera train --task translation`: runs/NAME/best)
loads in transformers as a Marian model, and that transformers' `generate` translates a file as
`tessera translate` does (greedy or beam), line for line. Also times both.

    ~/.cache/tessera-peers/venv/bin/python scripts/marian_export_check.py \
        --model runs/en-es/best --input dev.en --tessera-out dev.tessera.es [--beam 5]

The tessera output is produced beforehand with
`tessera translate --model runs/en-es/best --beam N --max-new-tokens M --input dev.en`.
Prints the number of identical lines, and transformers' sentences/s.
"""
import argparse
import sys
import time

import torch
from transformers import MarianMTModel, PreTrainedTokenizerFast


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--tessera-out", required=True)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MarianMTModel.from_pretrained(args.model).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(args.model)
    eos = model.config.eos_token_id
    lines = [l.rstrip("\n") for l in open(args.input, encoding="utf-8")]
    ours = [l.rstrip("\n") for l in open(args.tessera_out, encoding="utf-8")]
    assert len(ours) == len(lines), f"{len(ours)} tessera lines for {len(lines)} inputs"
    order = sorted(range(len(lines)), key=lambda i: len(tok(lines[i]).input_ids))
    out = [""] * len(lines)
    t0 = time.time()
    with torch.no_grad():
        for k in range(0, len(order), args.batch_size):
            idx = [i for i in order[k:k + args.batch_size] if lines[i].strip()]
            if not idx:
                continue
            ids = [tok(lines[i]).input_ids + [eos] for i in idx]
            n = max(len(x) for x in ids)
            pad = model.config.pad_token_id
            input_ids = torch.tensor([x + [pad] * (n - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids])
            g = model.generate(input_ids=input_ids, attention_mask=mask, num_beams=args.beam,
                               do_sample=False, max_new_tokens=args.max_new_tokens,
                               early_stopping=False, length_penalty=1.0)
            for i, seq in zip(idx, g.tolist()):
                seq = seq[1:]
                if eos in seq:
                    seq = seq[:seq.index(eos)]
                out[i] = tok.decode(seq, skip_special_tokens=True)
    dt = time.time() - t0
    same = sum(a == b for a, b in zip(out, ours))
    print(f"transformers: {len(lines)} lines in {dt:.1f} s = {len(lines) / dt:.2f} sentences/s "
          f"(beam {args.beam}, {args.threads} threads)")
    print(f"identical to tessera: {same}/{len(lines)}")
    for a, b, src in zip(out, ours, lines):
        if a != b:
            print(f"  differs: {src!r}\n    transformers {a!r}\n    tessera      {b!r}")
            break
    sys.exit(0 if same == len(lines) else 1)


if __name__ == "__main__":
    main()
