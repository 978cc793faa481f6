//! Other settings (tokenizers, smoothing, chrF options, seeded ROUGE bootstrap), the building
//! blocks (tokenizers, Porter stems, WordNet synonym sets) and the task metrics (seqeval,
//! scikit-learn), all against `fixtures/*.json` made by `scripts/metrics/gen_fixtures.py`.

mod common;

use common::*;
use serde_json::Value;
use tessera_metrics::bleu::{common_nrefs, Bleu, Smooth, Tokenizer};
use tessera_metrics::chrf::Chrf;
use tessera_metrics::rouge::{Rouge, RougeType};
use tessera_metrics::rouge_bootstrap::Bootstrap;
use tessera_metrics::wordnet::WordNet;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/");

fn fixture(name: &str) -> Value {
    load(&format!("{DIR}{name}"))
}

fn bleu_from_kwargs(kw: &Value) -> Bleu {
    let mut b = Bleu::default();
    if let Some(t) = kw["tokenize"].as_str() {
        b.tokenizer = Tokenizer::from_name(t).unwrap();
    }
    if let Some(l) = kw["lowercase"].as_bool() {
        b.lowercase = l;
    }
    if let Some(s) = kw["smooth_method"].as_str() {
        b.smooth = Smooth::from_name(s).unwrap();
    }
    b.smooth_value = kw["smooth_value"].as_f64();
    if let Some(e) = kw["effective_order"].as_bool() {
        b.effective_order = e;
    }
    if let Some(n) = kw["max_ngram_order"].as_u64() {
        b.max_order = n as usize;
    }
    b
}

#[test]
fn bleu_chrf_variants() {
    let fx = fixture("metrics_real.json");
    for c in fx["corpora"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let (h, r) = segments(c);
        let (hyps, refs) = (as_strs(&h), as_refs(&r));
        for v in c["variants"]["bleu"].as_array().unwrap() {
            let what = format!("{name} BLEU {}", v["kwargs"]);
            let mut b = bleu_from_kwargs(&v["kwargs"]);
            for threads in [1, 3] {
                b.threads = threads;
                let s = b.corpus_score(&hyps, &refs).unwrap();
                close(s.score, &v["score"], &what);
                close(s.bp, &v["bp"], &what);
                for k in 0..s.precisions.len() {
                    close(s.precisions[k], &v["precisions"][k], &what);
                    close(s.counts[k], &v["counts"][k], &what);
                    close(s.totals[k], &v["totals"][k], &what);
                }
                assert_eq!(s.sys_len, v["sys_len"].as_u64().unwrap(), "{what}");
                assert_eq!(s.ref_len, v["ref_len"].as_u64().unwrap(), "{what}");
            }
            assert_eq!(
                b.signature(common_nrefs(&refs)),
                v["signature"].as_str().unwrap(),
                "{what}"
            );
        }
        for v in c["variants"]["chrf"].as_array().unwrap() {
            let kw = &v["kwargs"];
            let what = format!("{name} chrF {kw}");
            let d = Chrf::default();
            let m = Chrf {
                char_order: kw["char_order"]
                    .as_u64()
                    .map_or(d.char_order, |x| x as usize),
                word_order: kw["word_order"]
                    .as_u64()
                    .map_or(d.word_order, |x| x as usize),
                beta: kw["beta"].as_u64().map_or(d.beta, |x| x as u32),
                lowercase: kw["lowercase"].as_bool().unwrap_or(false),
                whitespace: kw["whitespace"].as_bool().unwrap_or(false),
                eps_smoothing: kw["eps_smoothing"].as_bool().unwrap_or(false),
                threads: 2,
            };
            close(
                m.corpus_score(&hyps, &refs).unwrap().score,
                &v["score"],
                &what,
            );
            assert_eq!(
                m.signature(common_nrefs(&refs)),
                v["signature"].as_str().unwrap(),
                "{what}"
            );
        }
    }
}

#[test]
fn rouge_bootstrap_seeded() {
    let fx = fixture("metrics_real.json");
    for c in fx["corpora"].as_array().unwrap() {
        let (h, r) = segments(c);
        let bs = &c["variants"]["rouge_bootstrap"];
        let types: Vec<RougeType> = strs(&bs["types"])
            .iter()
            .map(|t| RougeType::from_name(t).unwrap())
            .collect();
        let m = Rouge {
            types: types.clone(),
            use_stemmer: false,
            threads: 2,
        };
        let segs = m.corpus_segments(&as_strs(&h), &as_refs(&r)).unwrap();
        let agg = Bootstrap {
            seed: bs["seed"].as_u64().unwrap() as u32,
            ..Bootstrap::default()
        }
        .aggregate(&segs)
        .unwrap();
        for (t, a) in types.iter().zip(&agg) {
            let w = &bs["result"][t.name()];
            for (b, p) in [("low", a.low), ("mid", a.mid), ("high", a.high)] {
                let what = format!("{} bootstrap {} {b}", c["name"], t.name());
                close(p.precision, &w[b][0], &what);
                close(p.recall, &w[b][1], &what);
                close(p.fmeasure, &w[b][2], &what);
            }
        }
    }
}

#[test]
fn tokenizers_match_sacrebleu() {
    let fx = fixture("units.json");
    let cases = strs(&fx["tokenizer_cases"]);
    for name in ["13a", "intl", "zh", "char", "none"] {
        let t = Tokenizer::from_name(name).unwrap();
        let want = strs(&fx["tokenized"][name]);
        for (c, w) in cases.iter().zip(&want) {
            let got = t.tokenize(tessera_metrics::text::py_rstrip(c));
            // `char` and `none` keep whitespace runs in sacreBLEU's string; BLEU splits on
            // whitespace afterwards, so the tokens are what must agree.
            let split = |s: &str| -> Vec<String> {
                tessera_metrics::text::py_split(s)
                    .map(String::from)
                    .collect()
            };
            if matches!(name, "char" | "none") {
                assert_eq!(split(&got), split(w), "tokenizer {name} on {c:?}");
            } else {
                assert_eq!(got, *w, "tokenizer {name} on {c:?}");
            }
        }
    }
}

#[test]
fn porter_matches_nltk() {
    let fx = fixture("units.json");
    let stems = fx["porter"].as_object().unwrap();
    assert!(stems.len() > 2000);
    for (w, s) in stems {
        assert_eq!(
            tessera_metrics::porter::stem(w),
            s.as_str().unwrap(),
            "stem of {w:?}"
        );
    }
}

#[test]
fn wordnet_synonyms_match_nltk() {
    let fx = fixture("units.json");
    let wn = WordNet::open_default().unwrap_or_else(|e| panic!("{e}"));
    let syns = fx["wordnet_synonyms"].as_object().unwrap();
    assert!(syns.len() > 1000);
    for (w, names) in syns {
        let got: Vec<String> = wn.synonyms(w).unwrap().iter().cloned().collect();
        let mut want = strs(names);
        want.sort();
        assert_eq!(got, want, "synonyms of {w:?}");
    }
}

#[test]
fn ner_matches_seqeval() {
    let fx = fixture("tasks.json");
    let ner = &fx["ner"];
    let out = tessera_metrics::commands::ner(
        std::path::Path::new(&format!("{DIR}ner_pred.conll")),
        std::path::Path::new(&format!("{DIR}ner_gold.conll")),
    )
    .unwrap();
    let j = &out.json;
    close(f(&j["accuracy"]), &ner["accuracy"], "token accuracy");
    let rep = ner["seqeval_report"].as_object().unwrap();
    for (k, w) in rep {
        let got = match k.as_str() {
            "micro avg" => &j["micro"],
            "macro avg" => &j["macro_avg"],
            "weighted avg" => &j["weighted"],
            t => &j["per_type"][t],
        };
        close(
            f(&got["precision"]),
            &w["precision"],
            &format!("ner {k} precision"),
        );
        close(f(&got["recall"]), &w["recall"], &format!("ner {k} recall"));
        close(f(&got["f1"]), &w["f1-score"], &format!("ner {k} f1"));
        assert_eq!(f(&got["support"]), f(&w["support"]), "ner {k} support");
    }
}

#[test]
fn classify_matches_sklearn() {
    let fx = fixture("tasks.json");
    let c = &fx["classify"];
    let out = tessera_metrics::commands::classify(
        std::path::Path::new(&format!("{DIR}labels_pred.txt")),
        std::path::Path::new(&format!("{DIR}labels_gold.txt")),
    )
    .unwrap();
    let j = &out.json;
    close(f(&j["accuracy"]), &c["accuracy"], "accuracy");
    assert_eq!(j["labels"], c["labels"]);
    assert_eq!(j["confusion"], c["confusion"]);
    for (k, w) in c["sklearn_report"].as_object().unwrap() {
        if k == "accuracy" {
            close(f(&j["accuracy"]), w, "accuracy");
            continue;
        }
        let got = match k.as_str() {
            "macro avg" => &j["macro_avg"],
            "weighted avg" => &j["weighted"],
            l => &j["per_class"][l],
        };
        close(
            f(&got["precision"]),
            &w["precision"],
            &format!("{k} precision"),
        );
        close(f(&got["recall"]), &w["recall"], &format!("{k} recall"));
        close(f(&got["f1"]), &w["f1-score"], &format!("{k} f1"));
        assert_eq!(f(&got["support"]), f(&w["support"]), "{k} support");
    }
}

#[test]
fn word_tokenize_matches_nltk() {
    let fx = fixture("units.json");
    let wt = &fx["word_tokenize"];
    let cases = strs(&wt["cases"]);
    for (c, want) in cases.iter().zip(wt["tokens"].as_array().unwrap()) {
        assert_eq!(
            tessera_metrics::word_tokenize::word_tokenize(c),
            strs(want),
            "word_tokenize({c:?})"
        );
    }
}

#[test]
fn meteor_over_word_tokenize() {
    let fx = fixture("units.json");
    let want = &fx["meteor_word_tokenize"];
    let real = fixture("metrics_real.json");
    let c = real["corpora"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == want["corpus"])
        .unwrap();
    let (h, r) = segments(c);
    let wn = WordNet::open_default().unwrap_or_else(|e| panic!("{e}"));
    let m = tessera_metrics::meteor::Meteor::default();
    let wt = tessera_metrics::word_tokenize::word_tokenize;
    for (i, w) in want["segments"].as_array().unwrap().iter().enumerate() {
        let ht = wt(&h[i]);
        let rt: Vec<Vec<String>> = r[i].iter().map(|x| wt(x)).collect();
        let hv: Vec<&str> = ht.iter().map(|s| s.as_str()).collect();
        let rv: Vec<Vec<&str>> = rt
            .iter()
            .map(|v| v.iter().map(|s| s.as_str()).collect())
            .collect();
        close(
            m.score(&rv, &hv, &wn).unwrap(),
            w,
            &format!("METEOR (word_tokenize) segment {i}"),
        );
    }
}
