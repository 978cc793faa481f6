"""Reference for tessera's encoder-decoder (the Marian family): a tiny random `MarianMTModel`
written by transformers, its logits on padded inputs, and `generate` outputs (greedy and beam
search in several settings: beam size, length penalty, early stopping, n-best with scores).

Writes crates/tessera/tests/fixtures/marian-tiny/{config.json, model.safetensors,
generation_config.json, expected.json}, read by crates/tessera/tests/seq2seq_hf.rs.

    ~/.cache/tessera-peers/venv/bin/python scripts/marian_fixture.py
"""
import json
import os

import torch
from transformers import MarianConfig, MarianMTModel

from seq2seq_cases import generate_cases

torch.manual_seed(0)
V, PAD, EOS = 40, 39, 0
cfg = MarianConfig(
    vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2,
    encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=24,
    max_position_embeddings=64, activation_function="swish", scale_embedding=True,
    pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=EOS,
    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
)
model = MarianMTModel(cfg)
with torch.no_grad():
    # Random weights everywhere (norms and biases too), and a logits bias that makes the end of a
    # sentence likely enough that beams finish at different lengths.
    for name, p in model.named_parameters():
        if "embed_positions" in name:
            continue
        p.copy_(torch.randn_like(p) * (0.6 if p.dim() > 1 else 0.2) + (1.0 if name.endswith("layer_norm.weight") else 0.0))
    bias = torch.randn(1, V) * 0.1
    bias[0, EOS] = 2.0
    model.final_logits_bias.copy_(bias)
model.eval()

out = os.path.join(os.path.dirname(__file__), "..", "crates", "tessera", "tests", "fixtures", "marian-tiny")
os.makedirs(out, exist_ok=True)
model.save_pretrained(out)

src = [[5, 9, 13, 2, 7, 21, EOS], [17, 3, 30, EOS]]
S = max(len(s) for s in src)
ids = torch.tensor([s + [PAD] * (S - len(s)) for s in src])
mask = torch.tensor([[1] * len(s) + [0] * (S - len(s)) for s in src])
dec = torch.tensor([[PAD, 4, 8, 15, 16], [PAD, 23, 42 % V, 1, 11]])
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    enc = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state

expected = {
    "src": src,
    "decoder_input_ids": dec.tolist(),
    "encoder_hidden": enc.flatten().tolist(),
    "logits": logits.flatten().tolist(),
    "logits_shape": list(logits.shape),
}
expected["generate"] = generate_cases(model, ids, mask)
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f)
print("wrote", out, sorted(os.listdir(out)))
