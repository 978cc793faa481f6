#!/usr/bin/env bash
# Data-parallel training on one node: 2 ranks × 1 thread (mpirun) against 1 process × 2 threads,
# the reference GPT of `tessera bench train` (same model, same global batch of 16 × 128 tokens),
# alternating in one session.
#   scripts/bench_dp.sh [ROUNDS] [STEPS]
# Prints each run's tokens/s and, for the ranks, the time per step spent in the gradient
# all-reduce; then the medians and the ratio. Needs Open MPI (builds tessera with --features mpi).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
STEPS="${2:-20}"
cargo build --release --quiet --features mpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
field() { grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2; }
ONE=() ; TWO=() ; AR=()
echo "cpu: $(./target/release/tessera info --system | awk -F': +' '/^cpu:/ {print $2}')"
for r in $(seq "$ROUNDS"); do
  out=$(./target/release/tessera --threads 2 bench train --steps "$STEPS")
  one=$(echo "$out" | awk '/^tokens_per_s:/ {print $2}')
  out=$(mpirun --bind-to core -np 2 ./target/release/tessera --threads 1 bench train --steps "$STEPS")
  two=$(echo "$out" | awk '/^tokens_per_s:/ {print $2}')
  ar=$(echo "$out" | head -1 | field allreduce_ms_per_step)
  ms=$(echo "$out" | head -1 | field ms_per_step)
  echo "round $r: 1 process x 2 threads $one tok/s | 2 ranks x 1 thread $two tok/s ($ms ms/step, all-reduce $ar ms/step)"
  ONE+=("$one"); TWO+=("$two"); AR+=("$ar")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m1=$(median "${ONE[@]}"); m2=$(median "${TWO[@]}"); mar=$(median "${AR[@]}")
echo "median: 1 process x 2 threads $m1 tok/s | 2 ranks x 1 thread $m2 tok/s, all-reduce $mar ms/step"
awk -v a="$m2" -v b="$m1" 'BEGIN {printf "ratio ranks/threads: %.2fx\n", a/b}'
