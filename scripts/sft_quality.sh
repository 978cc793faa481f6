#!/usr/bin/env bash
# LoRA fine-tuning quality, tessera vs PEFT + transformers, 3 seeds each, same recipe and data
# (400 training / 300 dev fine-food chat conversations); prints each run's dev exact match and loss.
#   scripts/sft_quality.sh [PYTHON]
set -u
cd "$(dirname "$0")/.."
PY="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
cargo build --release --quiet
./target/release/tessera pull smollm2-135m-instruct >/dev/null
G=$(ls "${TESSERA_CACHE:-$HOME/.cache/tessera/models}"/smollm2-135m-instruct/*.gguf)
D="${DATA:-/tmp/sft-q}"; mkdir -p "$D"
[ -f "$D/train.jsonl" ] || python3 scripts/make_sft_sentiment.py --out "$D" --train 400 --dev 300
for seed in 1 2 3; do
  rm -rf "$D/run-t$seed"
  ./target/release/tessera --threads 2 finetune chat --model "$G" --data "$D/train.jsonl" --dev "$D/dev.jsonl" \
     --out "$D/run-t$seed" --seed $seed --checkpoint-every 0 > "$D/run-t$seed.log" 2>&1
  echo "tessera seed $seed: $(grep dev_loss "$D/run-t$seed/metrics.jsonl" | tail -1)"
  "$PY" scripts/sft_peft.py --gguf "$G" --train "$D/train.jsonl" --dev "$D/dev.jsonl" --seed $seed --threads 2 2>/dev/null | tail -1 | sed "s/^/peft seed $seed: /"
done
