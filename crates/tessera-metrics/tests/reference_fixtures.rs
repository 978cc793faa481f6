//! Every number of the reference fixtures (`fixtures/reference/metrics.json`, made with
//! sacreBLEU 2.6.0, rouge-score 0.1.2 and NLTK 3.10.4, and this crate's own `fixtures/`
//! generated the same way on real text) reproduced within 5e-7.

mod common;

use common::*;
use serde_json::Value;
use tessera_metrics::bleu::{common_nrefs, Bleu};
use tessera_metrics::chrf::Chrf;
use tessera_metrics::meteor::Meteor;
use tessera_metrics::rouge::{mean_scores, Prf, Rouge, RougeScratch};
use tessera_metrics::text::py_split;
use tessera_metrics::wordnet::WordNet;

const SHARED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/reference/metrics.json"
);
const OWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/metrics_real.json");

fn check_bleu(name: &str, c: &Value, hyps: &[&str], refs: &[Vec<&str>]) {
    let cb = &c["sacrebleu"]["corpus_bleu"];
    let b = Bleu::default();
    let s = b.corpus_score(hyps, refs).unwrap();
    close(s.score, &cb["score"], &format!("{name} BLEU"));
    close(s.bp, &cb["bp"], &format!("{name} BP"));
    close(s.ratio, &cb["ratio"], &format!("{name} ratio"));
    for (k, p) in s.precisions.iter().enumerate() {
        close(*p, &cb["precisions"][k], &format!("{name} precision {k}"));
        assert_eq!(s.counts[k], f(&cb["counts"][k]), "{name} counts");
        assert_eq!(s.totals[k], f(&cb["totals"][k]), "{name} totals");
    }
    assert_eq!(s.sys_len, cb["sys_len"].as_u64().unwrap());
    assert_eq!(s.ref_len, cb["ref_len"].as_u64().unwrap());
    assert_eq!(
        b.signature(common_nrefs(refs)),
        cb["signature"].as_str().unwrap()
    );

    let sb = &c["sacrebleu"]["sentence_bleu"];
    let m = Bleu {
        effective_order: true,
        ..Bleu::default()
    };
    for (i, want) in sb["segments"].as_array().unwrap().iter().enumerate() {
        let s = m.sentence_score(hyps[i], &refs[i]).unwrap();
        let what = format!("{name} sentence BLEU {i}");
        close(s.score, &want["score"], &what);
        close(s.bp, &want["bp"], &what);
        for (k, p) in s.precisions.iter().enumerate() {
            close(*p, &want["precisions"][k], &what);
        }
        assert_eq!(s.sys_len, want["sys_len"].as_u64().unwrap(), "{what}");
        assert_eq!(s.ref_len, want["ref_len"].as_u64().unwrap(), "{what}");
    }
    let last = refs.last().unwrap().len();
    assert_eq!(m.signature(Some(last)), sb["signature"].as_str().unwrap());
}

fn check_chrf(name: &str, c: &Value, hyps: &[&str], refs: &[Vec<&str>]) {
    for (key, word_order) in [("chrf", 0), ("chrf_plus_plus", 2)] {
        let want = &c["sacrebleu"][key];
        let m = Chrf {
            word_order,
            ..Chrf::default()
        };
        let s = m.corpus_score(hyps, refs).unwrap();
        close(s.score, &want["score"], &format!("{name} {key}"));
        // The generator read the signature after its sentence_score loop, which leaves sacreBLEU's
        // `num_refs` at the last segment's count (so `nrefs:2`, not `var`, for variable refs).
        let last = refs.last().unwrap().len();
        assert_eq!(m.signature(Some(last)), want["signature"].as_str().unwrap());
        for (i, w) in want["sentence_scores"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let s = m.sentence_score(hyps[i], &refs[i]).unwrap();
            close(s.score, w, &format!("{name} {key} segment {i}"));
        }
    }
}

fn check_rouge(name: &str, c: &Value, hyps: &[&str], refs: &[Vec<&str>]) {
    let types = ["rouge1", "rouge2", "rougeL", "rougeLsum"];
    for key in ["no_stemmer", "porter_stemmer"] {
        let want = &c["rouge_score"][key];
        let m = Rouge {
            use_stemmer: want["use_stemmer"].as_bool().unwrap(),
            ..Rouge::default()
        };
        let mut sc = RougeScratch::default();
        let mut segs: Vec<Vec<Prf>> = Vec::new();
        for (i, w) in want["segments_PRF"].as_array().unwrap().iter().enumerate() {
            let got = m.score_refs_with(&refs[i], hyps[i], &mut sc);
            for (k, t) in types.iter().enumerate() {
                let what = format!("{name} {key} segment {i} {t}");
                close(got[k].precision, &w[t][0], &what);
                close(got[k].recall, &w[t][1], &what);
                close(got[k].fmeasure, &w[t][2], &what);
            }
            segs.push(got);
        }
        // The generator averaged the rounded segment values; do the same, then compare.
        let rounded: Vec<Vec<Prf>> = segs
            .iter()
            .map(|s| {
                s.iter()
                    .map(|p| Prf {
                        precision: round6(p.precision),
                        recall: round6(p.recall),
                        fmeasure: round6(p.fmeasure),
                    })
                    .collect()
            })
            .collect();
        let mean = mean_scores(&rounded);
        let exact = mean_scores(&segs);
        for (k, t) in types.iter().enumerate() {
            let w = &want["mean_PRF"][t];
            let what = format!("{name} {key} mean {t}");
            close(mean[k].precision, &w[0], &what);
            close(mean[k].recall, &w[1], &what);
            close(mean[k].fmeasure, &w[2], &what);
            assert!(
                (exact[k].fmeasure - f(&w[2])).abs() <= 1e-6,
                "{what} (unrounded)"
            );
        }
        // The corpus entry point (threads) gives the same per-segment numbers.
        let par = Rouge {
            threads: 2,
            ..m.clone()
        }
        .corpus_segments(hyps, refs)
        .unwrap();
        assert_eq!(par, segs);
    }
}

fn check_meteor(name: &str, c: &Value, hyps: &[&str], refs: &[Vec<&str>], wn: &WordNet) {
    let want = &c["nltk_meteor"];
    let m = Meteor::default();
    let mut scores = Vec::new();
    for (i, w) in want["segments"].as_array().unwrap().iter().enumerate() {
        let h: Vec<&str> = py_split(hyps[i]).collect();
        let r: Vec<Vec<&str>> = refs[i].iter().map(|r| py_split(r).collect()).collect();
        let s = m.score(&r, &h, wn).unwrap();
        close(s, w, &format!("{name} METEOR segment {i} ({:?})", hyps[i]));
        scores.push(round6(s));
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    close(mean, &want["mean"], &format!("{name} METEOR mean"));
}

fn check_file(path: &str, with_meteor: bool) {
    let fx = load(path);
    let wn = if with_meteor {
        Some(WordNet::open_default().unwrap_or_else(|e| panic!("{e}")))
    } else {
        None
    };
    for c in fx["corpora"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let (h, r) = segments(c);
        let (hyps, refs) = (as_strs(&h), as_refs(&r));
        check_bleu(name, c, &hyps, &refs);
        check_chrf(name, c, &hyps, &refs);
        check_rouge(name, c, &hyps, &refs);
        if let Some(wn) = &wn {
            check_meteor(name, c, &hyps, &refs, wn);
        }
    }
}

#[test]
fn shared_fixture_bleu_chrf_rouge() {
    check_file(SHARED, false);
}

#[test]
fn shared_fixture_meteor() {
    check_file(SHARED, true);
}

#[test]
fn own_real_text_fixtures() {
    if std::path::Path::new(OWN).exists() {
        check_file(OWN, true);
    } else {
        panic!("missing {OWN}: run scripts/metrics/gen_fixtures.py");
    }
}
