"""Reference for the Transformer block's cross-attention slot: a tiny random PyTorch
`nn.Transformer` (encoder-decoder, post-norm, ReLU MLP, dropout 0) run on random inputs with
padding masks and a causal target mask. Writes its weights (PyTorch names), inputs, the encoder's
output (memory), the decoder's output and the gradient of every parameter for
`sum(decoder output * probe)` (probe random) to
crates/tessera/tests/fixtures/seq2seq/nn_transformer.safetensors, read by
crates/tessera/tests/seq2seq_block.rs.

    ~/.cache/tessera-peers/venv/bin/python scripts/seq2seq_fixture.py
"""
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
C, H, FF, B, S, T = 16, 4, 32, 2, 5, 4
model = torch.nn.Transformer(
    d_model=C, nhead=H, num_encoder_layers=2, num_decoder_layers=2,
    dim_feedforward=FF, dropout=0.0, batch_first=True,
)
# Train mode (dropout is 0): PyTorch's inference fast path would zero the padded positions.
model.train()
src = torch.randn(B, S, C)
tgt = torch.randn(B, T, C)
# True = padding: the second source sequence has 2 padded positions. (Right-padded targets need no
# mask under causal attention: no real position sees a later one.)
src_pad = torch.tensor([[False] * S, [False] * (S - 2) + [True] * 2])
causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = may not attend
memory = model.encoder(src, src_key_padding_mask=src_pad)
out = model.decoder(
    tgt, memory, tgt_mask=causal, tgt_is_causal=True,
    memory_key_padding_mask=src_pad,
)
# A scalar of the output whose gradient reaches every parameter, cross-attention included.
probe = torch.randn(B, T, C)
(out * probe).sum().backward()
tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
tensors.update({f"grad.{k}": p.grad.detach().contiguous() for k, p in model.named_parameters()})
tensors.update({
    "input.src": src,
    "input.tgt": tgt,
    # 1 = token, 0 = padding (tessera's attention-mask convention)
    "input.src_mask": (~src_pad).float(),
    "input.probe": probe,
    "output.memory": memory.detach(),
    "output.decoder": out.detach(),
})
path = os.path.join(os.path.dirname(__file__), "..", "crates", "tessera", "tests", "fixtures",
                    "seq2seq", "nn_transformer.safetensors")
save_file(tensors, path, metadata={"torch": torch.__version__, "seed": "0"})
print(path, {k: tuple(v.shape) for k, v in tensors.items() if k.startswith(("input", "output"))})
