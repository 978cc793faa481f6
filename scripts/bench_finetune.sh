#!/usr/bin/env bash
# Fine-tuning throughput, tessera vs Hugging Face transformers + PyTorch, same model, data, batch,
# max length and optimizer, alternating in one session (issue 5).
#   scripts/bench_finetune.sh [ROUNDS] [TASK] [PYTHON]
# TASK: classify (fine-foods) or ner (twitter). PYTHON: an interpreter with torch + transformers
# (default: the peers' venv of ../shared/bench/README.md). Prints each run, the medians and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
TASK="${2:-classify}"
PY="${3:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
case "$TASK" in
  classify) DATA=../shared/data/classify/fine-foods/train.jsonl ;;
  ner) DATA=../shared/data/ner/twitter/train.conll ;;
  *) echo "TASK must be classify or ner" >&2; exit 2 ;;
esac
MODEL="${TESSERA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/models}/all-minilm-l6-v2"
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
T=() ; P=()
for r in $(seq "$ROUNDS"); do
  t=$(./target/release/tessera --threads 2 bench finetune --task "$TASK" --data "$DATA" | awk '/^examples_per_s:/ {print $2}')
  p=$(HF_HUB_OFFLINE=1 "$PY" scripts/finetune_hf_speed.py --model "$MODEL" --task "$TASK" --data "$DATA" 2>/dev/null \
      | awk '/^examples_per_s:/ {print $2}')
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "round $r: tessera $t ex/s | transformers $p ex/s | load average $load"
  T+=("$t"); P+=("$p")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mt=$(median "${T[@]}"); mp=$(median "${P[@]}")
echo "median: tessera $mt ex/s | transformers $mp ex/s"
awk -v a="$mt" -v b="$mp" 'BEGIN {printf "ratio tessera/transformers: %.2fx\n", a/b}'
