#!/usr/bin/env bash
# Benchmark of tessera-metrics against the Python reference tools, measured in the same run:
# corpus BLEU and chrF (sacreBLEU 2.6.0) and ROUGE-L (rouge-score 0.1.2) over 100,000 segment pairs
# built from ../shared/data/translate/en-es-bible/train.tsv. Prints medians and speed-ups.
#
# Usage: scripts/metrics/bench.sh [PY_REPEAT] [RUST_REPEAT]     (defaults 3 and 5)
#   PYTHON=/path/to/python  (needs sacrebleu==2.6.0 rouge-score==0.1.2; default: python3)
#   TESSERA_METRICS_BENCH_DIR=DIR  (default: target/metrics-bench)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
PY_REPEAT=${1:-3}
RUST_REPEAT=${2:-5}
DIR=${TESSERA_METRICS_BENCH_DIR:-$ROOT/target/metrics-bench}
cd "$ROOT"
[ -f "$DIR/hyp.txt" ] && [ -f "$DIR/ref.txt" ] || "$PY" scripts/metrics/make_bench_data.py --out "$DIR"
"$PY" scripts/metrics/bench_python.py --dir "$DIR" --repeat "$PY_REPEAT" --json "$DIR/python.json"
TESSERA_METRICS_BENCH_DIR="$DIR" TESSERA_METRICS_BENCH_REPEAT="$RUST_REPEAT" TESSERA_METRICS_BENCH_JSON="$DIR/rust.json" \
  cargo bench -p tessera-metrics --bench metrics_bench
"$PY" - "$DIR" <<'PY'
import json, os, sys
d = sys.argv[1]
py = json.load(open(os.path.join(d, "python.json")))
rs = json.load(open(os.path.join(d, "rust.json")))
names = {"bleu": "corpus BLEU (sacreBLEU)", "chrf": "corpus chrF (sacreBLEU)", "rougeL": "ROUGE-L mean (rouge-score)"}
print("\n| metric | Python median (s) | tessera 1 thread (s) | speed-up | tessera all cores (s) | speed-up |")
print("|---|---:|---:|---:|---:|---:|")
for m in ["bleu", "chrf", "rougeL"]:
    p = py[m]["median_s"]
    one = next(r for r in rs if r["metric"] == m and r["threads"] == 1)
    many = [r for r in rs if r["metric"] == m and r["threads"] != 1]
    row = f"| {names[m]} | {p:.2f} | {one['median_s']:.3f} | {p / one['median_s']:.0f}x |"
    if many:
        row += f" {many[0]['median_s']:.3f} ({many[0]['threads']} threads) | {p / many[0]['median_s']:.0f}x |"
    else:
        row += " - | - |"
    print(row)
    assert abs(py[m]["value"] - one["value"]) < 1e-9 * max(1.0, abs(one["value"])), (m, py[m]["value"], one["value"])
print("(values identical between the tools)")
PY
