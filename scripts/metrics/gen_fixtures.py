"""Reference fixtures for tessera-metrics on real text (../../shared/data), made with the reference tools.

Usage:  NLTK_DATA=DIR python scripts/metrics/gen_fixtures.py [--data ../shared/data] [--out crates/tessera-metrics/fixtures]

Needs sacrebleu==2.6.0 rouge-score==0.1.2 nltk==3.10.4 seqeval==1.2.2 scikit-learn numpy, and WordNet 3.0 laid out for
nltk by ../shared/fixtures/gen/setup_wordnet.sh DIR (then NLTK_DATA=DIR). Writes:
  metrics_real.json   corpora in the same layout as ../shared/fixtures/metrics.json (built with the same
                      corpus_entry() of ../shared/fixtures/gen/gen_metrics.py) plus `variants` (other BLEU/chrF settings,
                      seeded ROUGE bootstrap)
  units.json          tokenizer outputs, Porter stems, WordNet synonym sets
  tasks.json          seqeval and scikit-learn reports for the files ner_gold.conll / ner_pred.conll, labels_*.txt
Hypotheses are deterministic perturbations (seeded) of real sentences; references are the originals.
"""
import argparse
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
SHARED_GEN = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "gen")


def r6(x):
    return round(float(x), 6)


SWAPS = {"the": "a", "and": "then", "said": "spoke", "great": "big", "land": "country", "house": "home",
         "man": "person", "went": "walked", "began": "started", "shall": "will", "unto": "to", "saw": "looked at",
         "y": "e", "el": "la", "dijo": "habló", "casa": "hogar", "tierra": "país", "very": "really",
         "little": "small", "know": "understand", "good": "fine", "day": "daytime"}


def perturb(sent, rng, lang="en"):
    words = sent.split()
    out = []
    for w in words:
        x = rng.random()
        if x < 0.07:
            continue  # drop
        if x < 0.15 and w.lower().strip(".,;:") in SWAPS:
            core = w.lower().strip(".,;:")
            w = w.replace(core, SWAPS[core]) if core in w else SWAPS[core]
        elif x < 0.20 and len(w) > 4 and w.isalpha():
            w = w + rng.choice(["s", "ed", "ing", "ly"])  # inflect: exercises the stemmer
        elif x < 0.22:
            w = w.upper()
        out.append(w)
        if rng.random() < 0.03:
            out.append(rng.choice(["indeed", "also", "42", "3.5", "1,000", "(sic)", "--", "&amp;", "¿qué?"]))
    for _ in range(len(out) // 12):
        if len(out) > 2 and rng.random() < 0.5:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    if not out:
        out = words[:1]
    return " ".join(out)


def load_bible(data):
    rows = []
    with open(os.path.join(data, "translate", "en-es-bible", "train.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) == 3 and p[1] and p[2]:
                rows.append(p)
    return rows


def austen_paragraphs(data, n, rng):
    text = open(os.path.join(data, "lm", "austen.txt"), encoding="utf-8").read()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    paras = [p for p in paras if 200 < len(p) < 700]
    rng.shuffle(paras)
    out = []
    for p in paras[:n]:
        sents = [s for s in re.split(r"(?<=[.!?\"])\s+(?=[A-Z\"])", p) if s]
        out.append(sents)
    return out


def build_corpora(data):
    rng = random.Random(20261129)
    bible = load_bible(data)
    picks = rng.sample(range(len(bible)), 600)
    en = []
    for k, i in enumerate(picks[:250]):
        ref_id, e, _ = bible[i]
        ref = e if k % 5 else f"{ref_id.replace('.', ' ', 1)}: {e}"  # some numbers such as "Gen 1.3:"
        en.append((perturb(ref, rng), [ref]))
    es = []
    for k, i in enumerate(picks[250:500]):
        _, _, s = bible[i]
        refs = [s]
        if k % 3 == 0:
            refs.append(bible[(i + 1) % len(bible)][2])  # a second (unrelated-ish) reference
        if k % 7 == 0:
            refs.append(perturb(s, rng, "es"))
        es.append((perturb(s, rng, "es"), refs))
    summ = []
    for sents in austen_paragraphs(data, 120, rng):
        hyp_sents = [perturb(s, rng) for s in sents if rng.random() > 0.25] or [perturb(sents[0], rng)]
        summ.append(("\n".join(hyp_sents), ["\n".join(sents)]))
    return [("bible_en_single_ref", "KJV verses (some prefixed with their reference numbers), 1 reference", en),
            ("bible_es_multi_ref", "Reina-Valera verses, 1-3 references per segment (variable)", es),
            ("austen_summaries", "Austen paragraphs, '\\n'-separated sentences, 1 reference", summ)]


def variants(hyps, refs_per_seg):
    from sacrebleu.metrics import BLEU, CHRF
    import numpy as np
    from rouge_score import rouge_scorer, scoring
    max_refs = max(len(x) for x in refs_per_seg)
    streams = [[refs[k] if k < len(refs) else None for refs in refs_per_seg] for k in range(max_refs)]
    out = {"bleu": [], "chrf": []}
    for kw in [dict(tokenize="intl"), dict(tokenize="zh"), dict(tokenize="char"), dict(tokenize="none"),
               dict(lowercase=True), dict(smooth_method="floor"), dict(smooth_method="floor", smooth_value=0.5),
               dict(smooth_method="add-k"), dict(smooth_method="none"), dict(effective_order=True),
               dict(max_ngram_order=2), dict(max_ngram_order=6)]:
        b = BLEU(**kw)
        s = b.corpus_score(hyps, streams)
        out["bleu"].append({"kwargs": kw, "score": r6(s.score), "precisions": [r6(p) for p in s.precisions],
                            "bp": r6(s.bp), "sys_len": s.sys_len, "ref_len": s.ref_len,
                            "counts": [r6(c) for c in s.counts], "totals": [r6(t) for t in s.totals],
                            "signature": str(b.get_signature())})
    for kw in [dict(lowercase=True), dict(whitespace=True), dict(word_order=1), dict(beta=1), dict(beta=3, word_order=2),
               dict(char_order=4), dict(char_order=8, word_order=5), dict(eps_smoothing=True)]:
        c = CHRF(**kw)
        s = c.corpus_score(hyps, streams)
        out["chrf"].append({"kwargs": kw, "score": r6(s.score), "signature": str(c.get_signature())})
    types = ["rouge1", "rouge3", "rougeL", "rougeLsum"]
    sc = rouge_scorer.RougeScorer(types, use_stemmer=False)
    agg = scoring.BootstrapAggregator()
    for h, refs in zip(hyps, refs_per_seg):
        agg.add_scores(sc.score(refs[0], h) if len(refs) == 1 else sc.score_multi(refs, h))
    np.random.seed(42)
    res = agg.aggregate()
    out["rouge_bootstrap"] = {"types": types, "seed": 42, "n_samples": 1000,
                              "result": {t: {b: [r6(x) for x in getattr(res[t], b)] for b in ("low", "mid", "high")}
                                         for t in types}}
    return out


TOKENIZER_CASES = [
    "Hello, world.", "It costs $3.50, or 1,000 yen.", "a-b 1-2 x--y 3-", "&quot;hi&quot; &amp;lt; &gt;",
    "don't (yes) [no] {maybe}", "a.. b", "café. über, naïve!", "我爱北京天安门。OK, 好的", "¿Qué pasa? ¡Nada!",
    "e-mail: x@y.com / http://a.b/c?d=1&e=2", "«quoted» „text“ — dash – en", "1.5.2019 12:30 3,4 ,5 .6",
    "tab\tsep\u00a0nbsp\u2003em", "<skipped> line-\nbreak", "  leading and trailing  ", "ÀÉÎ ΣΊΣΥΦΟΣ İstanbul",
    "emoji 👍🏽 and ™ © ½ ∑", "日本語のテキスト、です。", "한국어 텍스트.", "x\u200by zero width",
]


WORD_TOKENIZE_CASES = [
    "I can't go, \"they\" said.", "'Tis the season; gonna wanna gimme more'n that.", "He said: 'hello' -- and left...",
    "Prices: $3.88 (roughly 3,36 euros) in New York.", "‘Quoted’ “text” «here» ok?!", "It's John's; we'll, they're, I'd.",
    "Cannot, d'ye, lemme, gotta: wanna go", "a--b — c – d * e @f #g %h &i", "[x] {y} <z> (w)", "End with quote.'\"",
]


def units(corpora):
    from sacrebleu.metrics.bleu import _get_tokenizer
    from nltk.stem.porter import PorterStemmer
    from nltk.corpus import wordnet as wn
    toks = {}
    for name in ["13a", "intl", "zh", "char", "none"]:
        t = _get_tokenizer(name)()
        toks[name] = [t(s.rstrip()) for s in TOKENIZER_CASES]
    words = set()
    for _, _, segs in corpora:
        for h, refs in segs:
            for s in [h] + refs:
                words.update(w.lower().strip(".,;:!?\"'()") for w in s.split())
    words = sorted(w for w in words if w)
    extra = ["skies", "dying", "lying", "tying", "news", "innings", "outings", "cannings", "howe", "proceed",
             "exceed", "succeed", "generalizations", "oscillators", "hopefulness", "analogi", "happily", "fully",
             "feed", "agreed", "plastered", "bled", "motoring", "sing", "conflated", "troubled", "sized", "hopping",
             "tanned", "falling", "hissing", "fizzed", "failing", "filing", "happy", "sky", "ies", "ied", "dies",
             "caresses", "ponies", "ties", "cats", "a*ded", "yy", "syzygy", "Yelling", "ÉTÉ", "naïvely", "x", "ab"]
    stem = PorterStemmer()
    stems = {w: stem.stem(w) for w in words + extra}
    syn_words = words[::3][:1500] + ["ran", "geese", "better", "best", "women", "feet", "went", "was", "us", "dogs",
                                     "churches", "boxes", "abounding", "galore", "cheerier", "lay", "saw", "men"]
    syns = {}
    for w in syn_words:
        names = sorted({l.name() for s in wn.synsets(w) for l in s.lemmas() if "_" not in l.name()})
        syns[w] = names
    from nltk.tokenize import word_tokenize
    from nltk.translate.meteor_score import meteor_score
    wt_cases = TOKENIZER_CASES + WORD_TOKENIZE_CASES
    for _, _, segs in corpora:
        wt_cases += [h for h, _ in segs[:60]]
    wt = [word_tokenize(c, preserve_line=True) for c in wt_cases]
    # METEOR over word_tokenize'd text (the `--tokenize word` option), on the first corpus
    _, _, segs = corpora[0]
    met = [r6(meteor_score([word_tokenize(r, preserve_line=True) for r in refs], word_tokenize(h, preserve_line=True)))
           for h, refs in segs]
    return {"tokenizer_cases": TOKENIZER_CASES, "tokenized": toks, "porter": stems, "wordnet_synonyms": syns,
            "word_tokenize": {"cases": wt_cases, "tokens": wt}, "meteor_word_tokenize": {"corpus": corpora[0][0],
                                                                                          "segments": met}}


def tasks(data, out):
    from seqeval.metrics import classification_report as seq_report, accuracy_score
    from sklearn.metrics import classification_report, confusion_matrix, accuracy_score as acc
    rng = random.Random(7)
    sents, cur = [], []
    for line in open(os.path.join(data, "ner", "twitter", "train.conll"), encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                sents.append(cur)
            cur = []
            continue
        tok, tag = line.split("\t")
        cur.append((tok, tag))
    sents = sents[:400]
    tagset = sorted({t for s in sents for _, t in s})
    pred = []
    for s in sents:
        p = []
        for tok, tag in s:
            x = rng.random()
            if x < 0.06:
                tag = rng.choice(tagset)
            elif x < 0.09 and tag.startswith("B-"):
                tag = "I-" + tag[2:]
            elif x < 0.11 and tag != "O":
                tag = "O"
            p.append((tok, tag))
        pred.append(p)
    for name, data_ in [("ner_gold.conll", sents), ("ner_pred.conll", pred)]:
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            for s in data_:
                for tok, tag in s:
                    f.write(f"{tok}\t{tag}\n")
                f.write("\n")
    y_true = [[t for _, t in s] for s in sents]
    y_pred = [[t for _, t in s] for s in pred]
    rep = seq_report(y_true, y_pred, output_dict=True)
    ner = {k: {m: (r6(v) if isinstance(v, float) else int(v)) for m, v in d.items()} for k, d in rep.items()}
    ner_acc = r6(accuracy_score(y_true, y_pred))

    gold, predl = [], []
    for line in list(open(os.path.join(data, "classify", "fine-foods", "train.jsonl"), encoding="utf-8"))[:600]:
        gold.append(json.loads(line)["label"])
    for line in list(open(os.path.join(data, "classify", "spam", "train.jsonl"), encoding="utf-8"))[:400]:
        gold.append(json.loads(line)["label"])
    labels = sorted(set(gold)) + ["unsure"]
    for g in gold:
        predl.append(g if rng.random() > 0.25 else rng.choice(labels))
    for name, v in [("labels_gold.txt", gold), ("labels_pred.txt", predl)]:
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(v) + "\n")
    crep = classification_report(gold, predl, output_dict=True, zero_division=0)
    cls = {k: (r6(d) if isinstance(d, float) else {m: (r6(v) if isinstance(v, float) else int(v)) for m, v in d.items()})
           for k, d in crep.items()}
    all_labels = sorted(set(gold) | set(predl))
    return {"ner": {"files": ["ner_gold.conll", "ner_pred.conll"], "seqeval_report": ner, "accuracy": ner_acc},
            "classify": {"files": ["labels_gold.txt", "labels_pred.txt"], "sklearn_report": cls,
                         "accuracy": r6(acc(gold, predl)), "labels": all_labels,
                         "confusion": confusion_matrix(gold, predl, labels=all_labels).tolist()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=os.path.join(ROOT, "crates", "tessera-metrics", "fixtures"))
    a = ap.parse_args()
    sys.path.insert(0, SHARED_GEN)
    import gen_metrics  # the shared generator: same corpus_entry() as ../shared/fixtures/metrics.json
    import sacrebleu, rouge_score, nltk  # noqa: F401
    from importlib.metadata import version
    os.makedirs(a.out, exist_ok=True)
    corpora = build_corpora(a.data)
    entries = []
    for name, kind, segs in corpora:
        hyps = [h for h, _ in segs]
        refs = [r for _, r in segs]
        e = gen_metrics.corpus_entry(name, kind, hyps, refs)
        e["variants"] = variants(hyps, refs)
        entries.append(e)
    vers = {p: version(p) for p in ["sacrebleu", "rouge-score", "nltk", "seqeval", "scikit-learn", "numpy"]}
    meta = {"source": "scripts/metrics/gen_fixtures.py", "versions": vers,
            "notes": ["Floats rounded to 6 decimals.", "Corpus layout as ../shared/fixtures/metrics.json (same generator "
                      "function); `variants` adds other BLEU/chrF settings and a seeded ROUGE BootstrapAggregator "
                      "(np.random.seed(42) right before aggregate())."]}
    def dump(name, obj):
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
    dump("metrics_real.json", dict(meta, corpora=entries))
    dump("units.json", dict(meta, **units(corpora)))
    dump("tasks.json", dict(meta, **tasks(a.data, a.out)))
    for e in entries:
        print(e["name"], e["sacrebleu"]["corpus_bleu"]["score"], e["nltk_meteor"]["mean"])


if __name__ == "__main__":
    main()
