#!/usr/bin/env python3
"""Make the Hugging Face parity fixture for tessera's fine-tuned encoders.

Two steps (see crates/tessera/tests/bert_parity.rs):

    python3 scripts/bert_hf_parity.py base OUT_DIR
        writes OUT_DIR/base: a tiny random BERT (vocab 64, hidden 8, 2 layers) with a WordPiece
        tokenizer.json, as transformers saves it (the starting point for `tessera finetune`);
    tessera finetune classify --model OUT_DIR/base ... --out OUT_DIR/cls
    tessera finetune ner      --model OUT_DIR/base ... --out OUT_DIR/ner
    python3 scripts/bert_hf_parity.py scratch OUT_DIR [TESSERA]
        trains OUT_DIR/scratch from scratch with TESSERA (default target/release/tessera): a
        tiny BERT config, a WordPiece tokenizer trained with --cjk-words on 160 mixed Chinese
        (zh-sentiment) and English (fine-foods) texts from ../shared/data, one MLM epoch, one
        task epoch;
    python3 scripts/bert_hf_parity.py logits OUT_DIR
        loads OUT_DIR/cls as BertForSequenceClassification and OUT_DIR/ner as
        BertForTokenClassification (fp32, eval mode), runs fixed padded ids and writes
        OUT_DIR/hf_logits.json; loads OUT_DIR/scratch with AutoTokenizer and
        AutoModelForSequenceClassification (as a user would) and writes the token ids and class
        probabilities of SCRATCH_TEXTS to OUT_DIR/hf_scratch.json. The Rust test needs no Python.
Needs: torch, transformers, tokenizers (versions are recorded in the fixture).
"""
import json
import os
import sys

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertModel

WORDS = ["the", "food", "was", "good", "great", "bad", "awful", "i", "met", "bob", "smith", "in", "paris",
         "london", "today", "not", "very", "a", "and", "it"]
IDS = [[2, 10, 11, 12, 13, 3, 0, 0], [2, 17, 18, 19, 20, 21, 22, 3]]
MASK = [[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8]


def base(out):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", "'"] + WORDS
    vocab += [c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##" + c for c in "abcdefghijklmnopqrst"]
    vocab = vocab[:64]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=32, hidden_act="gelu")
    path = os.path.join(out, "base")
    BertModel(cfg).save_pretrained(path, safe_serialization=True)
    tok.save(os.path.join(path, "tokenizer.json"))


SCRATCH_TEXTS = [
    "这个酒店很好，服务也不错。",
    "质量太差了，不会再买。",
    "The food was GREAT, très bon!",
    "书的内容不错 but shipping was slow",
    "还行吧" * 30,  # over-long: truncated at the saved max length
]


def scratch(out, tessera="target/release/tessera"):
    import subprocess
    data = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "classify")
    rows = []
    for name, n in [("zh-sentiment", 120), ("fine-foods", 40)]:
        with open(os.path.join(data, name, "train.jsonl"), encoding="utf-8") as f:
            for line, _ in zip(f, range(n)):
                r = json.loads(line)
                r["label"] = "pos" if r["label"] in ("positive", "great") else "neg"
                r["text"] = r["text"][:200]
                rows.append(r)
    train = os.path.join(out, "scratch-train.jsonl")
    with open(train, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    cfg = {"model_type": "bert", "vocab_size": 400, "hidden_size": 8, "num_hidden_layers": 2,
           "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
           "hidden_act": "gelu"}
    cfg_path = os.path.join(out, "scratch-config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    subprocess.run([tessera, "--threads", "1", "finetune", "classify", "--model", cfg_path,
                    "--train", train, "--out", os.path.join(out, "scratch"), "--cjk-words",
                    "--max-len", "24", "--epochs", "30", "--patience", "0", "--lr", "1e-2", "--mlm-epochs", "1", "--dropout", "0", "--seed", "3"],
                   check=True)
    for f in [train, cfg_path]:
        os.remove(f)


def logits(out):
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "ids": IDS, "mask": MASK}
    ids, mask = torch.tensor(IDS), torch.tensor(MASK)
    for name, cls in [("cls", BertForSequenceClassification), ("ner", BertForTokenClassification)]:
        m = cls.from_pretrained(os.path.join(out, name)).eval()
        with torch.no_grad():
            res[name] = m(input_ids=ids, attention_mask=mask).logits.tolist()
    with open(os.path.join(out, "hf_logits.json"), "w") as f:
        json.dump(res, f)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path = os.path.join(out, "scratch")
    tok = AutoTokenizer.from_pretrained(path)
    m = AutoModelForSequenceClassification.from_pretrained(path).eval()
    rows = []
    for text in SCRATCH_TEXTS:
        enc = tok(text, truncation=True, return_tensors="pt")
        with torch.no_grad():
            p = torch.softmax(m(**enc).logits[0], -1).tolist()
        rows.append({"text": text, "ids": enc["input_ids"][0].tolist(), "probs": p})
    with open(os.path.join(out, "hf_scratch.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "tokenizer_class": type(tok).__name__,
                   "id2label": m.config.id2label, "texts": rows}, f, ensure_ascii=False)


if __name__ == "__main__":
    {"base": base, "scratch": scratch, "logits": logits}[sys.argv[1]](*sys.argv[2:])
