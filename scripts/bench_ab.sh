#!/usr/bin/env bash
# Two tessera binaries side by side, alternating, on the paths the unsafe-code fixes touched:
# word2vec training (Hogwild threads: words/s) and SmolLM2 decoding (the hot pool: prefill and
# decode tok/s). Prints each run, then the medians and the ratio NEW/OLD.
#   scripts/bench_ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$1"; NEW="$2"; ROUNDS="${3:-5}"; THREADS="${4:-2}"
BENCH="$(cd .. && pwd)/shared/bench"
CORPUS="$(mktemp)"; trap 'rm -f "$CORPUS" /tmp/bench_ab.vec' EXIT
gzip -dc data/shakespeare.txt.gz > "$CORPUS"
GGUF="$("$NEW" pull smollm2-135m-instruct 2>/dev/null)"
declare -A W P D
for r in $(seq "$ROUNDS"); do
  # Alternate which binary goes first.
  if [ $((r % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    w=$("$bin" --threads "$THREADS" word2vec --data "$CORPUS" --out /tmp/bench_ab.vec 2>/dev/null \
        | sed -n 's/.*"seconds":[0-9.]*,"vocab":[0-9]*,"words":[0-9]*,"words_per_s":\([0-9.]*\).*/\1/p')
    out=$("$bin" --threads "$THREADS" bench --model "$GGUF" --prompts "$BENCH/bench_prompts.json" 2>/dev/null | tail -4)
    p=$(echo "$out" | awk '/^prefill_tokens_per_s:/ {print $2}'); d=$(echo "$out" | awk '/^decode_tokens_per_s:/ {print $2}')
    printf 'round %d %s: word2vec %.0f words/s, prefill %s tok/s, decode %s tok/s\n' "$r" "$which" "$w" "$p" "$d"
    W[$which]+="$w "; P[$which]+="$p "; D[$which]+="$d "
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for n in old new; do
  printf 'median %s: word2vec %.0f words/s, prefill %s tok/s, decode %s tok/s\n' "$n" "$(median "${W[$n]}")" "$(median "${P[$n]}")" "$(median "${D[$n]}")"
done
awk -v wo="$(median "${W[old]}")" -v wn="$(median "${W[new]}")" -v po="$(median "${P[old]}")" -v pn="$(median "${P[new]}")" \
    -v do_="$(median "${D[old]}")" -v dn="$(median "${D[new]}")" \
  'BEGIN { printf "new/old: word2vec %.3fx, prefill %.3fx, decode %.3fx\n", wn/wo, pn/po, dn/do_ }'
