#!/usr/bin/env python3
"""Make the Hugging Face parity fixture for tessera's fine-tuned encoders.

Two steps (see crates/tessera/tests/bert_parity.rs):

    python3 scripts/bert_hf_parity.py base OUT_DIR
        writes OUT_DIR/base: a tiny random BERT (vocab 64, hidden 8, 2 layers) with a WordPiece
        tokenizer.json, as transformers saves it (the starting point for `tessera finetune`);
    tessera finetune classify --model OUT_DIR/base ... --out OUT_DIR/cls
    tessera finetune ner      --model OUT_DIR/base ... --out OUT_DIR/ner
    python3 scripts/bert_hf_parity.py logits OUT_DIR
        loads OUT_DIR/cls as BertForSequenceClassification and OUT_DIR/ner as
        BertForTokenClassification (fp32, eval mode), runs fixed padded ids and writes
        OUT_DIR/hf_logits.json. The Rust test needs no Python.
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


def logits(out):
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "ids": IDS, "mask": MASK}
    ids, mask = torch.tensor(IDS), torch.tensor(MASK)
    for name, cls in [("cls", BertForSequenceClassification), ("ner", BertForTokenClassification)]:
        m = cls.from_pretrained(os.path.join(out, name)).eval()
        with torch.no_grad():
            res[name] = m(input_ids=ids, attention_mask=mask).logits.tolist()
    with open(os.path.join(out, "hf_logits.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    {"base": base, "logits": logits}[sys.argv[1]](sys.argv[2])
