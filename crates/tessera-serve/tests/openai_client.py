"""The official `openai` Python client against `tessera serve` (run by tests/openai_client.rs).

usage: python3 openai_client.py BASE_URL API_KEY
Chat (whole and streamed, with usage), completions, models and embeddings; exits non-zero with
a message on the first mismatch.
"""
import math
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)

models = [m.id for m in client.models.list().data]
assert "smollm2-135m-instruct" in models, models

messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
whole = client.chat.completions.create(
    model="smollm2-135m-instruct", messages=messages, temperature=0, max_tokens=16
)
text = whole.choices[0].message.content
assert whole.choices[0].message.role == "assistant"
assert whole.choices[0].finish_reason in ("stop", "length"), whole.choices[0].finish_reason
assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

pieces, usage = [], None
for chunk in client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=messages,
    temperature=0,
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
assert "".join(pieces) == text, ("stream differs", "".join(pieces), text)
assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

comp = client.completions.create(
    model="smollm2-135m-instruct", prompt="The capital of France is", max_tokens=5, temperature=0
)
assert comp.choices[0].text, comp

try:
    client.chat.completions.create(
        model="smollm2-135m-instruct", messages=messages, temperature=7
    )
    raise SystemExit("temperature 7 was accepted")
except openai.BadRequestError as e:
    assert "temperature" in str(e), e

emb = client.embeddings.create(model="all-minilm-l6-v2", input=["a cat sits", "a dog runs"])
vecs = [d.embedding for d in emb.data]
assert len(vecs) == 2 and len(vecs[0]) == 384, [len(v) for v in vecs]
norm = math.sqrt(sum(x * x for x in vecs[0]))
assert abs(norm - 1.0) < 1e-4, norm
one = client.embeddings.create(model="all-minilm-l6-v2", input="a cat sits", encoding_format="float")
assert max(abs(a - b) for a, b in zip(one.data[0].embedding, vecs[0])) < 1e-6
assert emb.usage.prompt_tokens > 0
print("openai client: ok")
