"""The `generate` settings the encoder-decoder fixtures record (greedy and beam search: beam size,
length penalty, early stopping, n-best with scores), shared by scripts/marian_fixture.py and
scripts/t5_fixture.py, and read back by crates/tessera/tests/seq2seq_hf.rs."""
import torch

SETTINGS = [
    {"num_beams": 1, "max_new_tokens": 10},
    {"num_beams": 3, "max_new_tokens": 10, "length_penalty": 1.0, "early_stopping": False},
    {"num_beams": 4, "max_new_tokens": 12, "length_penalty": 0.6, "early_stopping": True},
    {"num_beams": 4, "max_new_tokens": 12, "length_penalty": 2.0, "early_stopping": "never"},
    {"num_beams": 5, "max_new_tokens": 8, "length_penalty": 1.0, "early_stopping": False,
     "num_return_sequences": 3},
    {"num_beams": 2, "max_new_tokens": 6, "length_penalty": 0.0, "early_stopping": True,
     "num_return_sequences": 2},
]


def generate_cases(model, ids, mask):
    """transformers' outputs for each of SETTINGS: the sequences, and with beams their scores."""
    cases = []
    for s in SETTINGS:
        with torch.no_grad():
            g = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                               output_scores=True, return_dict_in_generate=True, **s)
        item = {"settings": s, "sequences": g.sequences.tolist()}
        if s["num_beams"] > 1:
            item["scores"] = g.sequences_scores.tolist()
        cases.append(item)
    return cases
