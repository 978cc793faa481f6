#!/usr/bin/env python3
"""Would bf16 matrix products keep all-MiniLM-L6-v2's embeddings within the fixture's bound?

The 1.5x embedding-throughput goal of issue 5 needs more multiply-adds per second than fp32
gives on the benchmark machine; AVX512-BF16 (`vdpbf16ps`) doubles them. This script simulates
that arithmetic in sentence-transformers: the inputs of the chosen linear layers are rounded to
bf16 (products and sums stay fp32, as `vdpbf16ps` does), and it prints the smallest cosine
against the fp32 embeddings of the fixture's sentences. The fixture asks for >= 0.99999.

    python3 scripts/bf16_embed_check.py [MODEL_DIR]   (default ~/.cache/tessera/models/all-minilm-l6-v2)
"""
import json
import os
import sys

import torch
from sentence_transformers import SentenceTransformer

here = os.path.dirname(os.path.abspath(__file__))
model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/tessera/models/all-minilm-l6-v2")
fixture = json.load(open(os.path.join(here, "..", "..", "shared", "fixtures", "minilm_embeddings.json")))
sents = [s["text"] if isinstance(s, dict) else s for s in fixture["sentences"]]
torch.set_num_threads(2)
m = SentenceTransformer(model, device="cpu")
ref = m.encode(sents, convert_to_tensor=True, normalize_embeddings=True)
fp32_linear = torch.nn.functional.linear


def bf16(x):
    return x.to(torch.bfloat16).to(torch.float32)


cases = {
    "every linear (activations and weights bf16)": lambda x, w: (bf16(x), bf16(w)),
    "MLP linears only": lambda x, w: (bf16(x), bf16(w)) if 1536 in w.shape else (x, w),
    "first MLP linear only": lambda x, w: (bf16(x), bf16(w)) if w.shape[0] == 1536 else (x, w),
    "weights only (activations fp32)": lambda x, w: (x, bf16(w)),
}
for name, f in cases.items():
    def linear(x, w, b=None, f=f):
        x, w = f(x, w)
        return fp32_linear(x, w, b)
    torch.nn.functional.linear = linear
    out = m.encode(sents, convert_to_tensor=True, normalize_embeddings=True)
    cos = (ref * out).sum(-1)
    print(f"{name}: min cosine {cos.min().item():.7f}, max |diff| {(ref - out).abs().max().item():.2e}")
torch.nn.functional.linear = fp32_linear
