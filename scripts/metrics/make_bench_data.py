"""Builds the 100,000-segment benchmark corpus for tessera-metrics from the KJV side of
../shared/data/translate/en-es-bible/train.tsv: references are verses (cycled), hypotheses are seeded
perturbations of them (dropped, swapped, inflected, replaced words), different on every cycle.

Usage: python scripts/metrics/make_bench_data.py [--data ../shared/data] [--out DIR] [--n 100000]
Writes DIR/hyp.txt and DIR/ref.txt (default DIR: target/metrics-bench).
"""
import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_fixtures import DEFAULT_DATA, ROOT, load_bible, perturb  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "metrics-bench"))
    ap.add_argument("--n", type=int, default=100_000)
    a = ap.parse_args()
    verses = [e for _, e, _ in load_bible(a.data)]
    rng = random.Random(12345)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "hyp.txt"), "w", encoding="utf-8") as h, \
            open(os.path.join(a.out, "ref.txt"), "w", encoding="utf-8") as r:
        for i in range(a.n):
            ref = verses[i % len(verses)]
            h.write(perturb(ref, rng) + "\n")
            r.write(ref + "\n")
    print(f"wrote {a.n} segment pairs to {a.out}")


if __name__ == "__main__":
    main()
