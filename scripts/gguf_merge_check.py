#!/usr/bin/env python3
"""Check `tessera export` against llama.cpp and transformers: merge a LoRA adapter into a GGUF
model, load the merged file in llama-cpp-python, and compare

1. greedy continuations of a few chat prompts: llama.cpp on the merged `--type` file (default
   q8_0) against `tessera generate --model merged.gguf --temperature 0`, and the same on a merged
   f32 file;
2. logits (every position of prompt + tessera's continuation): llama.cpp on the merged f32 file
   against transformers with the base GGUF dequantized (its own GGUF reader and Q/K row
   un-permutation) and the adapter merged as PEFT merges it (`W += alpha/r · B @ A`, Hugging Face
   row order). This checks the merge itself (the rows moved back into llama.cpp's rotary order)
   with code that shares nothing with tessera's; the first check shows llama.cpp reads the file
   as tessera does.

    ~/.cache/tessera-peers/venv/bin/python scripts/gguf_merge_check.py \
        [--adapter DIR] [--model smollm2-135m-instruct] [--type q8_0] [--max-tokens 48]

Without --adapter a random one is written first (PEFT's layout, as PEFT or `tessera finetune`
would save it: rank 8, every projection, no `tessera_base` entry, so tessera reads it as a PEFT
adapter). Both programs get the same prompt ids (`tessera template --json`, the ids `generate`
feeds its model); llama.cpp's continuation is the argmax of its logits at every step. A
continuation passes when it is identical up to the end-of-sequence token or the token budget, or
parts where llama.cpp's two best tokens lie within --tie: on quantized weights tessera follows
llama.cpp's arithmetic but not bit for bit, and 30 layers amplify 1-ulp differences in the 8-bit
activations to 0.2-0.35 in a logit (crates/tessera/tests/quant_model.rs; the same bound, 0.3).
The logits pass within --logit-tol (llama.cpp's f16 KV cache against transformers' f32). Also
prints how far the adapter moved transformers' logits, so a no-op merge cannot pass unnoticed.

llama.cpp's extra buffer types are turned off (see scripts/llama_cpp_server.py: its AMX path
crashes on some KVM hosts). Exit status 1 when a check fails.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for learning to program.",
    "Explain photosynthesis in one sentence.",
    "List the first five prime numbers.",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, stdin=None):
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout, p.stderr


def model_path(tessera, model):
    if os.path.isfile(model):
        return model
    out, _ = run([tessera, "pull", model])
    return out.strip().splitlines()[0]


def random_adapter(gguf_path, out_dir, rank=8, alpha=16.0, b_std=0.01, seed=0):
    """A PEFT-layout LoRA adapter on every projection of the GGUF's Llama blocks."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    r = GGUFReader(gguf_path)
    shapes = {t.name: [int(x) for x in t.shape] for t in r.tensors}  # GGUF order: (in, out)
    layers = 0
    while f"blk.{layers}.attn_q.weight" in shapes:
        layers += 1
    parts = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    rng = np.random.default_rng(seed)
    tensors = {}
    for l in range(layers):
        for g, hf in parts.items():
            inp, out = shapes[f"blk.{l}.{g}.weight"][:2]
            name = f"base_model.model.model.layers.{l}.{hf}"
            bound = 1.0 / np.sqrt(inp)
            tensors[f"{name}.lora_A.weight"] = rng.uniform(-bound, bound, (rank, inp)).astype(np.float32)
            tensors[f"{name}.lora_B.weight"] = (rng.standard_normal((out, rank)) * b_std).astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": gguf_path,
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": [hf.split(".")[-1] for hf in parts.values()],
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
    }
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def load_llama(path, threads):
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def without_extra_bufts():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = without_extra_bufts
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                 n_batch=512, logits_all=True, verbose=False)


def llama_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def hf_models(base, adapter):
    """transformers' Llama on the dequantized base GGUF, and a function merging the adapter into
    it in place (PEFT's merge); returns (model, merge)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF progress bar
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(base)),
                                             gguf_file=os.path.basename(base),
                                             dtype=torch.float32).eval()

    def merge():
        cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
        scale = cfg["lora_alpha"] / cfg["r"]
        t = load_file(os.path.join(adapter, "adapter_model.safetensors"))
        n = 0
        with torch.no_grad():
            for name, mod in m.named_modules():
                for tag in ("", ".default"):
                    a = t.get(f"base_model.model.{name}.lora_A{tag}.weight")
                    b = t.get(f"base_model.model.{name}.lora_B{tag}.weight")
                    if a is not None and b is not None:
                        mod.weight += scale * (b.float() @ a.float())
                        n += 1
        return n

    return m, merge


def hf_logits(m, ids):
    import torch

    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def llama_greedy(llm, prompt_ids, max_tokens, eos):
    """Argmax continuation of `prompt_ids`, with the margin (top1 - top2 logit) of each step."""
    llm.reset()
    llm.eval(prompt_ids)
    ids, margins = [], []
    for _ in range(max_tokens):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.argsort(logits)[-2:]
        tok = int(top2[1])
        margins.append(float(logits[top2[1]] - logits[top2[0]]))
        if tok in eos:
            break
        ids.append(tok)
        llm.eval([tok])
    return ids, margins


def tessera_greedy(tessera, model, prompt, max_tokens, adapter=None):
    cmd = [tessera, "generate", "--model", model, "--prompt", prompt, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--json"]
    if adapter:
        cmd += ["--adapter", adapter]
    out, _ = run(cmd)
    return json.loads(out.strip().splitlines()[-1])


def compare_greedy(args, llm, merged, eos, label):
    """Greedy continuations of every prompt by tessera and llama.cpp on `merged`; returns the
    failures, and each prompt's ids followed by tessera's continuation."""
    same, near_ties, failures, seqs = 0, 0, 0, []
    for prompt in PROMPTS:
        msgs = json.dumps([{"role": "user", "content": prompt}])
        out, _ = run([args.tessera, "template", "--model", merged, "--messages", "-",
                      "--add-generation-prompt", "--json"], stdin=msgs)
        prompt_ids = json.loads(out)["ids"]
        ours = tessera_greedy(args.tessera, merged, prompt, args.max_tokens)
        assert ours["prompt_tokens"] == len(prompt_ids), (ours["prompt_tokens"], len(prompt_ids))
        seqs.append(prompt_ids + ours["ids"])
        theirs, margins = llama_greedy(llm, prompt_ids, args.max_tokens, eos)
        n = min(len(ours["ids"]), len(theirs))
        split = next((i for i in range(n) if ours["ids"][i] != theirs[i]), None)
        if split is None and len(ours["ids"]) != len(theirs):
            split = n
        if split is None:
            same += 1
            print(f"  same     {prompt!r}: {len(theirs)} tokens: {ours['text'][:60]!r}")
            continue
        margin = margins[split] if split < len(margins) else float("nan")
        tie = margin < args.tie
        near_ties += tie
        failures += not tie
        print(f"  {'near-tie' if tie else 'DIFFERS '} {prompt!r}: from token {split} "
              f"(llama.cpp's top-2 margin there {margin:.3f})\n"
              f"     tessera:   {ours['text'][:90]!r}\n"
              f"     llama.cpp: {llm.detokenize(theirs).decode('utf-8', 'replace')[:90]!r}")
    print(f"{label}: {same}/{len(PROMPTS)} identical greedy continuations, {near_ties} parted at "
          f"a near tie (< {args.tie}), {failures} differ")
    return failures, seqs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--adapter", help="LoRA adapter directory (default: a random one)")
    ap.add_argument("--type", default="q8_0")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tie", type=float, default=0.3,
                    help="a divergence where llama.cpp's top-2 margin is below this is a near tie")
    ap.add_argument("--logit-tol", type=float, default=0.25,
                    help="largest logit difference, llama.cpp (merged f32) vs transformers")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers check")
    ap.add_argument("--tessera", default=os.path.join(ROOT, "target", "release", "tessera"))
    ap.add_argument("--keep", help="directory for the adapter and merged files, kept (default: a "
                    "temporary one, removed)")
    args = ap.parse_args()

    tmp = args.keep or tempfile.mkdtemp(prefix="gguf-merge-check-")
    os.makedirs(tmp, exist_ok=True)
    try:
        failures = check(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failures else 0)


def check(args, tmp):
    base = model_path(args.tessera, args.model)
    adapter = args.adapter
    if adapter is None:
        adapter = os.path.join(tmp, "adapter")
        random_adapter(base, adapter)
        print(f"random adapter (rank 8, every projection) in {adapter}")

    from gguf import GGUFReader

    failures = 0
    seqs = None
    for qtype in dict.fromkeys([args.type, "f32"]):
        merged = os.path.join(tmp, f"merged-{qtype}.gguf")
        _, err = run([args.tessera, "export", "--model", args.model, "--adapter", adapter,
                      "--out", merged, "--type", qtype])
        print(err.strip())
        meta = GGUFReader(merged).fields
        eos = set()
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
            if key in meta:
                eos.add(int(meta[key].parts[-1][0]))
        llm = load_llama(merged, args.threads)
        f, seqs = compare_greedy(args, llm, merged, eos, f"{qtype}, tessera vs llama.cpp")
        failures += f
        if qtype != "f32":
            del llm
    if not args.no_hf:
        # llm is the merged f32 file's; seqs its prompts + tessera's continuations.
        m, merge = hf_models(base, adapter)
        before = [hf_logits(m, s) for s in seqs]
        n = merge()
        worst, moved, top1 = 0.0, 0.0, 0
        total = 0
        for s, b in zip(seqs, before):
            want = hf_logits(m, s)
            got = llama_logits(llm, s)
            worst = max(worst, float(np.abs(got - want).max()))
            moved = max(moved, float(np.abs(want - b).max()))
            top1 += int((got.argmax(-1) == want.argmax(-1)).sum())
            total += len(s)
        ok = worst < args.logit_tol and moved > 4 * worst
        failures += not ok
        print(f"f32 logits, llama.cpp on the merged file vs transformers + PEFT merge ({n} "
              f"projections): largest difference {worst:.4f} (tolerance {args.logit_tol}), argmax "
              f"equal at {top1}/{total} positions; the adapter moved transformers' logits by up "
              f"to {moved:.3f}{'' if ok else '  FAILED'}")
    return failures


if __name__ == "__main__":
    main()
