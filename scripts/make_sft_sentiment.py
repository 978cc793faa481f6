#!/usr/bin/env python3
"""Chat examples from the fine-food reviews (../shared/data/classify/fine-foods/train.jsonl) for
supervised fine-tuning: a user turn asking for the review's class, the assistant's one-word answer.

The corpus labels a review `great` (5 stars) or `other` (fewer stars); the answer is that label.
Reviews are cut to their first --max-chars characters (whole words). A fixed shuffle (--seed)
splits them into --train training and --dev dev conversations, written as
OUT/train.jsonl and OUT/dev.jsonl ({"messages": [...]}, the format `tessera finetune chat` and
scripts/sft_peft.py read).

    python3 scripts/make_sft_sentiment.py --out /tmp/sft-data [--train 1000 --dev 300]
"""
import argparse
import json
import os
import random

PROMPT = ("Is this food review \"great\" (5 stars) or \"other\" (fewer stars)? "
          "Answer with one word: great or other.\n\nReview: {text}")


def cut(text, n):
    text = " ".join(text.replace("<br />", " ").split())
    if len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0] + " ..."


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "classify",
                                                   "fine-foods", "train.jsonl"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--dev", type=int, default=300)
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
    random.Random(a.seed).shuffle(rows)
    if a.train + a.dev > len(rows):
        raise SystemExit(f"only {len(rows)} reviews")
    os.makedirs(a.out, exist_ok=True)
    for name, part in (("train", rows[:a.train]), ("dev", rows[a.train:a.train + a.dev])):
        with open(os.path.join(a.out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for r in part:
                msgs = [{"role": "user", "content": PROMPT.format(text=cut(r["text"], a.max_chars))},
                        {"role": "assistant", "content": r["label"]}]
                f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    print(f"wrote {a.train} training and {a.dev} dev conversations to {a.out}")


if __name__ == "__main__":
    main()
