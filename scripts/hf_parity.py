#!/usr/bin/env python3
"""Make the Hugging Face parity fixture for tessera's checkpoints.

Trains nothing itself: it takes checkpoint directories written by `tessera train`
(config.json, model.safetensors, tokenizer.json), loads each in Hugging Face transformers
as the class its config names (GPT2LMHeadModel or LlamaForCausalLM), runs fp32 forward
passes on fixed token ids, and writes the logits to a JSON fixture that the Rust test
`crates/tessera/tests/hf_parity.rs` compares against. The tests need no Python.

Usage (see README "Hugging Face parity fixture"):
    python3 scripts/hf_parity.py OUT_DIR CKPT_DIR [CKPT_DIR ...]
Needs: torch, transformers, safetensors (versions are recorded in the fixture).
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

IDS = [
    [0, 5, 17, 42, 99, 3, 7, 250, 11, 300, 64, 1, 2, 8, 400, 33],
    [0, 400, 401, 402, 1, 1, 1, 19, 20, 21, 22, 23, 24, 25, 26, 27],
]
TEXT = "It is a truth universally acknowledged, that a single man"


def main():
    out_dir, ckpts = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    result = {
        "generated_by": "scripts/hf_parity.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "note": "logits rounded to 7 significant digits; fp32 CPU, eager attention",
        "models": {},
    }
    for ck in ckpts:
        name = os.path.basename(os.path.normpath(ck))
        dst = os.path.join(out_dir, name)
        os.makedirs(dst, exist_ok=True)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            shutil.copyfile(os.path.join(ck, f), os.path.join(dst, f))
        model = AutoModelForCausalLM.from_pretrained(
            dst, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(dst, "tokenizer.json"))
        text_ids = tok(TEXT, add_special_tokens=False)["input_ids"]
        entry = {"class": type(model).__name__, "cases": []}
        with torch.no_grad():
            for ids in IDS + [text_ids]:
                logits = model(torch.tensor([ids])).logits[0]
                entry["cases"].append(
                    {
                        "ids": ids,
                        "logits": [[float(f"{x:.7g}") for x in row] for row in logits.tolist()],
                    }
                )
        entry["text"] = TEXT
        entry["text_ids"] = text_ids
        result["models"][name] = entry
        print(f"{name}: {entry['class']}, {len(entry['cases'])} cases", file=sys.stderr)
    with open(os.path.join(out_dir, "hf_logits.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
