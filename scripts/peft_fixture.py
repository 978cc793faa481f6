#!/usr/bin/env python3
"""Make the PEFT parity fixture: a LoRA adapter written by `tessera finetune chat` loaded with
`peft.PeftModel.from_pretrained` onto transformers' model of the same base (the SmolLM2 GGUF,
dequantized to f32 by transformers' GGUF loader), logits of fixed token ids written to JSON.

The Rust test `crates/tessera/tests/sft.rs` (`peft_loads_tessera_adapters`) attaches the same
adapter to tessera's f32 model of the GGUF and compares (1e-4). The tests need no Python.

    python3 scripts/peft_fixture.py GGUF ADAPTER_DIR OUT_DIR
Needs: torch, transformers, gguf, peft (versions are recorded in the fixture).
"""
import json
import os
import shutil
import sys

import peft
import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM

IDS = [1, 9690, 198, 2683, 359, 253, 5356, 2, 198, 1, 4093, 198, 19556, 17, 13, 2, 198, 1, 520, 9531, 198]
COLS = 256


def main():
    gguf, adapter, out = sys.argv[1:4]
    torch.set_num_threads(2)
    d, f = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([IDS])).logits[0]
    os.makedirs(out, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tessera_adapter.json"):
        shutil.copy(os.path.join(adapter, name), os.path.join(out, name))
    fixture = {
        "ids": IDS,
        "cols": COLS,
        "logits": [[round(float(x), 6) for x in row[:COLS]] for row in logits],
        "argmax": [int(row.argmax()) for row in logits],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }
    with open(os.path.join(out, "peft_logits.json"), "w") as fh:
        json.dump(fixture, fh)
    print(f"wrote {out}/peft_logits.json ({len(IDS)} positions x {COLS} logits)")


if __name__ == "__main__":
    main()
