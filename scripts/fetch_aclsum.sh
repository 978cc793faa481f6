#!/usr/bin/env bash
# A summarization corpus from a package registry: ACLSum (PyPI `aclsum` 0.1.2, MIT per its
# package metadata; the texts are ACL Anthology papers, CC BY): 250 computational-linguistics
# papers (train 100 / val 50 / test 100), each with three one-sentence expert summaries
# (challenge, approach, outcome). No news corpus with reference summaries ships in PyPI, npm or
# Debian (checked); this is the closest fit.
#
# Writes, for one split: OUT/docs.txt (one document per line: abstract, introduction and
# conclusion sentences joined) and OUT/refs.txt (the three summary sentences joined), for
#   tessera summarize --lines --input OUT/docs.txt > sums.txt
#   tessera eval rouge --hyp sums.txt --ref OUT/refs.txt
#
# usage: scripts/fetch_aclsum.sh [SPLIT] [OUT]   (default: test data/aclsum)
set -euo pipefail
split=${1:-test}
out=${2:-data/aclsum}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps aclsum==0.1.2 -d "$tmp" -q
python3 - "$tmp"/aclsum-0.1.2-py3-none-any.whl "$split" "$out" <<'PY'
import json, os, sys, zipfile
whl, split, out = sys.argv[1:]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    rows = [json.loads(l) for l in z.read(f"aclsum/dataset/{split}.jsonl").decode().splitlines() if l.strip()]
with open(f"{out}/docs.txt", "w") as d, open(f"{out}/refs.txt", "w") as r:
    for row in rows:
        s = row["sentences"]
        doc = " ".join(s.get("abstract", []) + s.get("introduction", []) + s.get("conclusion", []))
        ref = " ".join(row["summary"][k] for k in ("challenge", "approach", "outcome"))
        d.write(" ".join(doc.split()) + "\n")
        r.write(" ".join(ref.split()) + "\n")
print(f"{out}: {len(rows)} documents ({split})")
PY
