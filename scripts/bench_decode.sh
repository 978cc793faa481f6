#!/usr/bin/env bash
# Prefill and decode speed of SmolLM2-135M-Instruct (Q4_1 GGUF): tessera vs llama.cpp
# (llama-cpp-python) vs transformers, same file, same prompts, same threads, alternating.
#   scripts/bench_decode.sh [ROUNDS] [THREADS] [PYTHON]
# PYTHON: an interpreter with llama-cpp-python 0.3.36 and transformers (default: the peers' venv of
# ../shared/bench/README.md). Prints every run's three lines, then the medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; THREADS="${2:-2}"
PY="${3:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
BENCH="$(cd .. && pwd)/shared/bench"
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p tessera-cli
GGUF="$(./target/release/tessera pull smollm2-135m-instruct >/dev/null 2>&1; ls "${TESSERA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/models}"/smollm2-135m-instruct/*.gguf)"
declare -A P D M
run() { # name, command...
  local name=$1; shift
  local out; out=$("$@" 2>/dev/null | tail -4)
  local p d m; p=$(echo "$out" | awk '/^prefill_tokens_per_s:/ {print $2}'); d=$(echo "$out" | awk '/^decode_tokens_per_s:/ {print $2}'); m=$(echo "$out" | awk '/^peak_rss_mib:/ {print $2}')
  echo "  $name: prefill $p tok/s, decode $d tok/s, peak $m MiB"
  P[$name]+="$p "; D[$name]+="$d "; M[$name]+="$m "
}
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  run tessera ./target/release/tessera --threads "$THREADS" bench --model "$GGUF" --prompts "$BENCH/bench_prompts.json"
  run llama.cpp "$PY" "$BENCH/llama_cpp_speed.py" --model "$GGUF" --threads "$THREADS"
  run transformers "$PY" "$BENCH/transformers_speed.py" --model "$GGUF" --threads "$THREADS"
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for n in tessera llama.cpp transformers; do
  echo "median $n: prefill $(median "${P[$n]}") tok/s, decode $(median "${D[$n]}") tok/s, peak $(median "${M[$n]}") MiB"
done
awk -v td="$(median "${D[tessera]}")" -v ld="$(median "${D[llama.cpp]}")" -v tp="$(median "${P[tessera]}")" \
    -v lp="$(median "${P[llama.cpp]}")" -v hp="$(median "${P[transformers]}")" -v tm="$(median "${M[tessera]}")" -v lm="$(median "${M[llama.cpp]}")" \
  'BEGIN { best = (lp > hp) ? lp : hp; printf "decode tessera/llama.cpp: %.2fx | prefill tessera/faster peer: %.2fx | peak RSS tessera/llama.cpp: %.2fx\n", td/ld, tp/best, tm/lm }'
