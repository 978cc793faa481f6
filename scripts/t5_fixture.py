"""Reference for tessera's T5 family: two tiny random `T5ForConditionalGeneration` models written
by transformers, their encoder outputs and logits on padded inputs, and `generate` outputs (greedy
and beam search in several settings).

- t5-tiny: original T5 (ReLU MLP `wi`/`wo`, the decoder output scaled by d_model^-0.5 before the
  tied head), 2 + 2 layers, d_model 16, 4 heads of d_kv 4.
- t5-gated-tiny: T5 v1.1 style (gated-GELU MLP `wi_0`/`wi_1`/`wo`, no output scaling), 3
  encoder + 2 decoder layers, 4 heads of d_kv 6 (H·D = 24 ≠ d_model 16). (More decoder than
  encoder layers breaks transformers 5.25's `generate`: its cache is sized by `num_layers`.)

Both use 8 relative-position buckets up to a distance of 20 and a 30-token source, so exact,
logarithmic and capped buckets all occur. Writes crates/tessera/tests/fixtures/{t5-tiny,
t5-gated-tiny}/{config.json, model.safetensors, generation_config.json, expected.json}, read by
crates/tessera/tests/seq2seq_t5.rs.

    ~/.cache/tessera-peers/venv/bin/python scripts/t5_fixture.py
"""
import json
import os

import torch
from transformers import T5Config, T5ForConditionalGeneration

from seq2seq_cases import generate_cases

V, PAD, EOS = 40, 0, 1
ROOT = os.path.join(os.path.dirname(__file__), "..", "crates", "tessera", "tests", "fixtures")

# name -> (config, standard deviation of the random projection weights). The gated model's
# weights are smaller: at 0.5 its own f32 logits differ from float64's by 2e-4 (products of two
# large branches), more than the 1e-4 the test asks of tessera; the script checks that PyTorch's
# f32 logits stay within 2e-5 of float64's.
MODELS = {
    "t5-tiny": (dict(d_kv=4, num_layers=2, num_decoder_layers=2, feed_forward_proj="relu"), 0.5),
    "t5-gated-tiny": (dict(d_kv=6, num_layers=3, num_decoder_layers=2,
                           feed_forward_proj="gated-gelu", tie_word_embeddings=False), 0.3),
}

src = [[5, 9, 13, 2, 7, 21, EOS], [17, 3, 30, EOS],
       [(7 * i + 3) % (V - 2) + 2 for i in range(29)] + [EOS]]
S = max(len(s) for s in src)
ids = torch.tensor([s + [PAD] * (S - len(s)) for s in src])
mask = torch.tensor([[1] * len(s) + [0] * (S - len(s)) for s in src])
dec = torch.tensor([[PAD, 4, 8, 15, 16, 3, 9, 22, 5, 6, 7, 8],
                    [PAD, 23, 2, 1, 11, 4, 4, 4, 5, 6, 30, 2],
                    [PAD] + [(5 * i + 1) % V for i in range(11)]])

def cli_expectations(model, out):
    """A word-level tokenizer.json for t5-tiny (`<pad>`, `</s>`, `<unk>`, then w3 .. w39; the
    end token appended as T5's tokenizer does) and what `tessera translate` must print for some
    lines: transformers' greedy and beam-4 outputs, decoded without special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "</s>": EOS, "<unk>": 2}
    vocab.update({f"w{i}": i for i in range(3, V)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    tk.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.save_pretrained(out)
    lines = ["w5 w9 w13 w2 w7 w21", "w17 w3 w30", "", "w11 w12 w13 w14 w15 w16 w17 w18"]
    result = {"input": lines}
    for key, beams in [("greedy", 1), ("beam4", 4)]:
        texts = []
        for line in lines:
            if not line:
                texts.append("")
                continue
            enc = tok(line, return_tensors="pt")
            with torch.no_grad():
                g = model.generate(**enc, num_beams=beams, max_new_tokens=10, do_sample=False)
            texts.append(tok.decode(g[0], skip_special_tokens=True))
        result[key] = texts
    return result


for name, (extra, std) in MODELS.items():
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=V, d_model=16, d_ff=24, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20,
                   dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS,
                   decoder_start_token_id=PAD, **extra)
    model = T5ForConditionalGeneration(cfg)
    with torch.no_grad():
        # Random weights everywhere (norm weights around 1); in t5-tiny some beams end early.
        for pname, p in model.named_parameters():
            if pname.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in pname:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * std)
    model.eval()
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        enc = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        wide = T5ForConditionalGeneration(cfg).eval()
        wide.load_state_dict(model.state_dict())
        wide = wide.double()
        exact = wide(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    rounding = (logits.double() - exact).abs().max().item()
    assert rounding < 2e-5, f"{name}: f32 logits differ from float64's by {rounding}"
    expected = {
        "scale_decoder_outputs": bool(cfg.scale_decoder_outputs),
        "src": src,
        "decoder_input_ids": dec.tolist(),
        "encoder_hidden": enc.flatten().tolist(),
        "logits": logits.flatten().tolist(),
        "logits_shape": list(logits.shape),
    }
    expected["generate"] = generate_cases(model, ids, mask)
    if name == "t5-tiny":
        expected["cli"] = cli_expectations(model, out)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    print("wrote", out, sorted(os.listdir(out)))
