"""gensim's Word2Vec with the settings of `tessera word2vec`, on the same sentences.

Sentences are built exactly as tessera builds them: paragraphs (lines between blank lines) of
words that are runs of letters, digits and apostrophes, lowercased, with ' and ’ trimmed at the ends.

usage: python word2vec_gensim.py FILE... [--threads 2] [--loss] [--out vectors.txt] [--show man,king]
Prints training seconds and in-vocabulary words/s (words x epochs / training time).
"""
import argparse
import logging
import re
import time

from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

WORD = re.compile(r"(?:[^\W_]|['\u2019])+")


def sentences(paths):
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            text = f.read()
        cur = []
        for line in text.split("\n"):
            if not line.strip():
                if cur:
                    out.append(cur)
                cur = []
                continue
            for w in WORD.findall(line):
                w = w.lower().replace("\u2019", "'").strip("'")
                if w:
                    cur.append(w)
        if cur:
            out.append(cur)
    return out


class EpochLoss(CallbackAny2Vec):
    def __init__(self):
        self.prev = 0.0
        self.epoch = 0

    def on_epoch_end(self, model):
        cum = model.get_latest_training_loss()
        self.epoch += 1
        print(f"epoch {self.epoch}: summed loss {cum - self.prev:.0f}", flush=True)
        self.prev = cum


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--negative", type=int, default=5)
    ap.add_argument("--sample", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--show", default="")
    a = ap.parse_args()
    sents = sentences(a.files)
    m = Word2Vec(
        vector_size=a.dim, window=a.window, min_count=a.min_count, sg=1, hs=0,
        negative=a.negative, sample=a.sample, alpha=a.lr, min_alpha=a.lr * 1e-4,
        seed=a.seed, workers=a.threads, compute_loss=a.loss,
    )
    m.build_vocab(sents)
    vocab_words = m.corpus_total_words  # all words; in-vocabulary words counted below
    kept = sum(1 for s in sents for w in s if w in m.wv.key_to_index)
    t0 = time.perf_counter()
    m.train(sents, total_examples=len(sents), epochs=a.epochs,
            callbacks=[EpochLoss()] if a.loss else [], compute_loss=a.loss)
    secs = time.perf_counter() - t0
    print(f"gensim: vocab {len(m.wv)} words, {kept} in-vocabulary words of {vocab_words}; "
          f"training {secs:.2f} s, {kept * a.epochs / secs:.0f} words/s ({a.threads} threads)")
    if a.out:
        m.wv.save_word2vec_format(a.out, binary=False)
    for w in filter(None, a.show.split(",")):
        print(w, [(x, round(s, 3)) for x, s in m.wv.most_similar(w, topn=10)])


if __name__ == "__main__":
    main()
