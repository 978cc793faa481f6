#!/usr/bin/env bash
# LoRA fine-tuning throughput and peak memory, tessera vs PEFT + transformers, same data, rank,
# targets, batch and steps, alternating in one session (2 threads each).
#   scripts/bench_sft.sh [ROUNDS] [STEPS] [PYTHON]
# Data: scripts/make_sft_sentiment.py (fine-food reviews as chat examples) into $DATA (default
# /tmp/sft-data). Throughput counts the steps after the first (both tools); tokens = input tokens.
# LONGEST=N: train on the N longest conversations only (all of nearly one length), so that every
# batch either tool draws is as long as the longest and the peak memories compare like for like
# (run STEPS = N / 8 steps: one epoch, every conversation seen by both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; STEPS="${2:-12}"
PY="${3:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
DATA="${DATA:-/tmp/sft-data}"
[ -f "$DATA/train.jsonl" ] || python3 scripts/make_sft_sentiment.py --out "$DATA"
if [ -n "${LONGEST:-}" ]; then
  LONG="$(mktemp -d)"
  python3 - "$DATA" "$LONG" "$LONGEST" <<'PY'
import sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = sorted(open(f"{src}/train.jsonl"), key=len, reverse=True)
open(f"{dst}/train.jsonl", "w").writelines(rows[:n])
open(f"{dst}/dev.jsonl", "w").writelines(rows[n:n + 8])
PY
  DATA="$LONG"
fi
cargo build --release --quiet
./target/release/tessera pull smollm2-135m-instruct >/dev/null
GGUF="$(ls "${TESSERA_CACHE:-$HOME/.cache/tessera/models}"/smollm2-135m-instruct/*.gguf)"
OUT="$(mktemp -d)"; trap 'rm -rf "$OUT" ${LONG:-}' EXIT
T=(); P=(); TM=(); PM=()
for r in $(seq "$ROUNDS"); do
  rm -rf "$OUT/t"
  /usr/bin/time -f "%M" -o "$OUT/t.rss" ./target/release/tessera --threads 2 finetune chat \
    --model "$GGUF" --data "$DATA/train.jsonl" --dev "$DATA/dev.jsonl" --out "$OUT/t" \
    --max-steps "$STEPS" --eval-every 100000 --checkpoint-every 0 >/dev/null 2>&1
  # tokens/s of steps 2.. from metrics.jsonl (step lines carry tokens_per_s and the step's time).
  t=$(python3 -c "
import json,sys
s=[json.loads(l) for l in open('$OUT/t/metrics.jsonl') if '\"tokens_per_s\"' in l and 'dev_loss' not in l][1:]
tok=sum(x['tokens_per_s']*x['seconds'] for x in s); sec=sum(x['seconds'] for x in s)
print(f'{tok/sec:.1f}')")
  tm=$(( $(cat "$OUT/t.rss") / 1024 ))
  out=$("$PY" scripts/sft_peft.py --gguf "$GGUF" --train "$DATA/train.jsonl" --dev "$DATA/dev.jsonl" \
        --max-steps "$STEPS" --no-eval --threads 2 2>/dev/null | tail -1)
  p=$(echo "$out" | python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['tokens_per_s']:.1f}\")")
  pm=$(echo "$out" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['peak_rss_mib']))")
  echo "round $r: tessera $t tok/s ($tm MiB) | peft $p tok/s ($pm MiB)"
  T+=("$t"); P+=("$p"); TM+=("$tm"); PM+=("$pm")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mt=$(median "${T[@]}"); mp=$(median "${P[@]}"); mtm=$(median "${TM[@]}"); mpm=$(median "${PM[@]}")
echo "median: tessera $mt tok/s, $mtm MiB | peft $mp tok/s, $mpm MiB"
awk -v a="$mt" -v b="$mp" -v c="$mtm" -v d="$mpm" 'BEGIN {printf "ratio tessera/peft: speed %.2fx, peak memory %.2fx\n", a/b, c/d}'
