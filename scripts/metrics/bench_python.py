"""Times the reference Python tools on the benchmark corpus (see make_bench_data.py): sacreBLEU corpus BLEU and
chrF, rouge-score ROUGE-L (mean over segments), each from lines already in memory, repeated; prints medians.

Usage: python scripts/metrics/bench_python.py [--dir target/metrics-bench] [--repeat 3] [--json OUT]
Needs sacrebleu==2.6.0 rouge-score==0.1.2.
"""
import argparse
import json
import os
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(ROOT, "target", "metrics-bench"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from sacrebleu.metrics import BLEU, CHRF
    from rouge_score import rouge_scorer
    hyps = open(os.path.join(a.dir, "hyp.txt"), encoding="utf-8").read().split("\n")[:-1]
    refs = open(os.path.join(a.dir, "ref.txt"), encoding="utf-8").read().split("\n")[:-1]

    def bleu():
        return BLEU().corpus_score(hyps, [refs]).score

    def chrf():
        return CHRF().corpus_score(hyps, [refs]).score

    def rouge_l():
        sc = rouge_scorer.RougeScorer(["rougeL"])
        return sum(sc.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)) / len(hyps)

    out = {}
    for name, fn in [("bleu", bleu), ("chrf", chrf), ("rougeL", rouge_l)]:
        times, value = [], None
        for _ in range(a.repeat):
            t = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t)
        out[name] = {"median_s": statistics.median(times), "times_s": times, "value": value}
        print(f"python {name:7s} median {statistics.median(times):8.3f} s  value {value:.6f}  runs {[round(x, 3) for x in times]}",
              flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
