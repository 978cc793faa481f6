#!/usr/bin/env bash
# Server throughput, tessera serve vs llama-cpp-python's server, same GGUF, same clients,
# alternating in one session: aggregate decode tokens/s and time to first token with 1 and with 8
# concurrent greedy streaming clients (scripts/bench_serve.py, 128 tokens per answer).
#   scripts/bench_serve.sh [ROUNDS] [SECONDS] [PYTHON]
# PYTHON: an interpreter with llama-cpp-python[server] (default: the peers' venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; SECS="${2:-30}"
PY="${3:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-peers/venv/bin/python}"
cargo build --release --quiet
BIN=./target/release/tessera
GGUF="$($BIN pull smollm2-135m-instruct 2>/dev/null)"
PORT_T=18181; PORT_L=18182
declare -A R
rec() { R[$1]+="$2 "; printf '  %-32s %s\n' "$1" "$2"; }
field() { awk -v k="$1:" '$1 == k {print $2}'; }
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/v1/models" >/dev/null && return 0; sleep 0.2; done; echo "server on $1 did not start" >&2; exit 1; }
run_clients() { # port clients label
  out=$(python3 scripts/bench_serve.py --url "http://127.0.0.1:$1" --clients "$2" --seconds "$SECS" --max-tokens 128)
  rec "$3 tok/s" "$(echo "$out" | field tokens_per_s)"
  rec "$3 ttft p50" "$(echo "$out" | field ttft_p50_s)"
  rec "$3 ttft p99" "$(echo "$out" | field ttft_p99_s)"
  rec "$3 failed" "$(echo "$out" | field failed)"
}
for r in $(seq "$ROUNDS"); do
  echo "round $r ($(cut -d' ' -f1 /proc/loadavg) load)"
  $BIN --threads 2 serve --port $PORT_T --parallel 8 --ctx 1024 >/dev/null 2>&1 & TP=$!
  wait_up $PORT_T
  run_clients $PORT_T 1 "tessera 1 client"
  run_clients $PORT_T 8 "tessera 8 clients"
  kill $TP; wait $TP 2>/dev/null || true
  "$PY" scripts/llama_cpp_server.py --model "$GGUF" --n_threads 2 --n_threads_batch 2 --n_ctx 4096 \
      --host 127.0.0.1 --port $PORT_L --interrupt_requests False >/dev/null 2>&1 & LP=$!
  wait_up $PORT_L
  run_clients $PORT_L 1 "llama.cpp 1 client"
  run_clients $PORT_L 8 "llama.cpp 8 clients"
  kill $LP; wait $LP 2>/dev/null || true
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "medians of $ROUNDS ($SECS s each):"
for who in "tessera 1 client" "tessera 8 clients" "llama.cpp 1 client" "llama.cpp 8 clients"; do
  printf '%-22s %8s tok/s   ttft p50 %6s s   p99 %6s s   failed %s\n' "$who" \
    "$(median "${R[$who tok/s]}")" "$(median "${R[$who ttft p50]}")" "$(median "${R[$who ttft p99]}")" \
    "$(median "${R[$who failed]}")"
done
t1=$(median "${R[tessera 1 client tok/s]}"); t8=$(median "${R[tessera 8 clients tok/s]}")
l8=$(median "${R[llama.cpp 8 clients tok/s]}")
awk -v a="$t8" -v b="$t1" -v c="$l8" 'BEGIN {printf "tessera 8 clients / 1 client: %.2fx; tessera / llama.cpp with 8 clients: %.2fx\n", a/b, a/c}'
