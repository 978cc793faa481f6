#!/usr/bin/env bash
# Training throughput, tessera vs PyTorch, same model and flags, alternating in one session.
#   scripts/bench_train.sh [ROUNDS] [PYTHON]
# PYTHON: an interpreter with torch (default: the peers' venv of ../shared/bench/README.md).
# ARCH=llama: the Llama layout (`tessera bench train --arch llama` against scripts/train_torch.py
# --arch llama) instead of the GPT of ../shared/bench/train_gpt_torch.py.
# Prints each run's tokens/s and peak RSS, then the medians and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
PY="${2:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
BENCH="$(cd .. && pwd)/shared/bench/train_gpt_torch.py"; ARGS=()
if [ "${ARCH:-gpt2}" = llama ]; then BENCH="$PWD/scripts/train_torch.py"; ARGS=(--arch llama); fi
cargo build --release --quiet
T=() ; P=() ; TM=() ; PM=()
for r in $(seq "$ROUNDS"); do
  out=$(./target/release/tessera --threads 2 bench train "${ARGS[@]}")
  t=$(echo "$out" | awk '/^tokens_per_s:/ {print $2}'); tm=$(echo "$out" | awk '/^peak_rss_mib:/ {print $2}')
  out=$("$PY" "$BENCH" --threads 2 "${ARGS[@]}")
  p=$(echo "$out" | awk '/^tokens_per_s:/ {print $2}'); pm=$(echo "$out" | awk '/^peak_rss_mib:/ {print $2}')
  # Cores other processes used while PyTorch's timed steps ran: how disturbed this round was.
  fc=$(echo "$out" | grep -o '"foreign_cores_avg": [0-9.]*' | awk '{print $2}')
  echo "round $r: tessera $t tok/s ($tm MiB) | pytorch $p tok/s ($pm MiB) | other load ${fc:-?} cores"
  T+=("$t"); P+=("$p"); TM+=("$tm"); PM+=("$pm")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mt=$(median "${T[@]}"); mp=$(median "${P[@]}"); mtm=$(median "${TM[@]}"); mpm=$(median "${PM[@]}")
echo "median: tessera $mt tok/s, $mtm MiB | pytorch $mp tok/s, $mpm MiB"
awk -v a="$mt" -v b="$mp" -v c="$mtm" -v d="$mpm" 'BEGIN {printf "ratio tessera/pytorch: speed %.2fx, peak memory %.2fx\n", a/b, c/d}'
