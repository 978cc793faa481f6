#!/usr/bin/env bash
# Two tessera binaries (OLD, NEW) and the peers, alternating in one session, on every speed the
# engine redesign of issue 12 could move: prefill/decode (SmolLM2 Q4_1 GGUF) vs llama.cpp, GPT
# training vs PyTorch (the peers' train_gpt_torch.py), Llama training vs PyTorch
# (scripts/train_torch.py --arch llama; NEW only: OLD has no --arch), fine-tuning vs transformers
# (fine-foods), sentence embeddings vs sentence-transformers, and the default `small` config's
# tokens/s in `tessera train` (median over steps 6-20 of 20 on data/austen-300k.txt).
#   scripts/bench_before_after.sh OLD_BINARY NEW_BINARY [ROUNDS] [PYTHON]
# Prints every run, then the medians and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$1"; NEW="$2"; ROUNDS="${3:-3}"
PY="${4:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
BENCH="$(cd .. && pwd)/shared/bench"
GGUF="$("$NEW" pull smollm2-135m-instruct 2>/dev/null)"
MINILM="$("$NEW" pull all-minilm-l6-v2 2>/dev/null)"
FOODS=../shared/data/classify/fine-foods/train.jsonl
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
declare -A R
rec() { R[$1]+="$2 "; printf '  %-28s %s\n' "$1" "$2"; }
field() { awk -v k="$1:" '$1 == k {print $2}'; }
small_train() { # binary -> median tokens/s of steps 6..20
  "$1" --threads 2 train --data data/austen-300k.txt --config small --out "$WORK/small" --max-steps 20 \
      --eval-every 1000 --no-plot --overwrite >/dev/null 2>&1
  grep '"tokens_per_s"' "$WORK/small/metrics.jsonl" | sed -n '6,20p' \
    | sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1/' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
for r in $(seq "$ROUNDS"); do
  echo "round $r ($(cut -d' ' -f1 /proc/loadavg) load)"
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    out=$("$bin" --threads 2 bench --model "$GGUF" --prompts "$BENCH/bench_prompts.json" 2>/dev/null)
    rec "prefill $who" "$(echo "$out" | field prefill_tokens_per_s)"; rec "decode $who" "$(echo "$out" | field decode_tokens_per_s)"
  done
  out=$("$PY" "$BENCH/llama_cpp_speed.py" --model "$GGUF" --threads 2 2>/dev/null)
  rec "prefill llama.cpp" "$(echo "$out" | field prefill_tokens_per_s)"; rec "decode llama.cpp" "$(echo "$out" | field decode_tokens_per_s)"
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    rec "train-gpt $who" "$("$bin" --threads 2 bench train 2>/dev/null | field tokens_per_s)"
  done
  rec "train-gpt pytorch" "$("$PY" "$BENCH/train_gpt_torch.py" --threads 2 2>/dev/null | field tokens_per_s)"
  rec "train-llama new" "$("$NEW" --threads 2 bench train --arch llama 2>/dev/null | field tokens_per_s)"
  rec "train-llama pytorch" "$("$PY" scripts/train_torch.py --arch llama --threads 2 2>/dev/null | field tokens_per_s)"
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    rec "finetune $who" "$("$bin" --threads 2 bench finetune --task classify --data "$FOODS" 2>/dev/null | field examples_per_s)"
  done
  rec "finetune transformers" "$(HF_HUB_OFFLINE=1 "$PY" scripts/finetune_hf_speed.py --model "$MINILM" --task classify --data "$FOODS" 2>/dev/null | field examples_per_s)"
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    rec "embed $who" "$("$bin" --threads 2 bench embed --model all-minilm-l6-v2 --n 1000 --batch 32 2>/dev/null | field sentences_per_s)"
  done
  rec "embed sentence-transformers" "$("$PY" "$BENCH/st_speed.py" --model "$MINILM" --n 1000 --batch 32 --threads 2 2>/dev/null | field sentences_per_s)"
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    rec "train-small $who" "$(small_train "$bin")"
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "medians of $ROUNDS:"
for k in "prefill old" "prefill new" "prefill llama.cpp" "decode old" "decode new" "decode llama.cpp" \
         "train-gpt old" "train-gpt new" "train-gpt pytorch" "train-llama new" "train-llama pytorch" \
         "finetune old" "finetune new" "finetune transformers" "embed old" "embed new" \
         "embed sentence-transformers" "train-small old" "train-small new"; do
  printf '%-28s %s\n' "$k" "$(median "${R[$k]}")"
done
