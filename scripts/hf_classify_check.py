#!/usr/bin/env python3
"""Load a directory written by `tessera finetune classify` (pretrained or from scratch) with Hugging
Face transformers (AutoTokenizer + AutoModelForSequenceClassification, fp32, eval mode) and compare
its class probabilities with `tessera classify`'s on the same texts.

    python3 scripts/hf_classify_check.py runs/zh texts.txt [--tessera target/release/tessera]

Prints the largest probability difference, the token-id agreement and whether every predicted
label is the same; exits 1 when a label differs or a probability differs by more than 1e-4.
"""
import argparse
import json
import subprocess
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("texts")
    ap.add_argument("--tessera", default="target/release/tessera")
    a = ap.parse_args()
    texts = [l.rstrip("\n") for l in open(a.texts, encoding="utf-8") if l.strip()]
    cfg = json.load(open(f"{a.model}/config.json"))
    max_len = cfg.get("tessera_max_length", 128)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(a.model).eval()
    out = subprocess.run([a.tessera, "classify", "--model", a.model, "--input", a.texts],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    ours = [json.loads(l) for l in out if l.startswith("{")]
    assert len(ours) == len(texts), (len(ours), len(texts))
    worst, same = 0.0, 0
    with torch.no_grad():
        for text, o in zip(texts, ours):
            enc = tok(text, truncation=True, max_length=max_len, return_tensors="pt")
            p = torch.softmax(model(**enc).logits[0], -1)
            hf = {model.config.id2label[i]: float(p[i]) for i in range(p.shape[0])}
            worst = max(worst, max(abs(hf[k] - o["scores"][k]) for k in hf))
            same += max(hf, key=hf.get) == o["label"]
    print(f"{len(texts)} texts: labels equal {same}/{len(texts)}, largest probability difference {worst:.2e}")
    sys.exit(0 if same == len(texts) and worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
