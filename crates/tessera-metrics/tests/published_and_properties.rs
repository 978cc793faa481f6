//! The reference tools' own published cases (sacreBLEU README, rouge-score unit tests, NLTK's
//! METEOR doctest) and property tests: ranges, identity gives the maximum, order invariance,
//! thread-count invariance.

use tessera_metrics::bleu::{Bleu, Smooth, Tokenizer};
use tessera_metrics::chrf::Chrf;
use tessera_metrics::meteor::Meteor;
use tessera_metrics::rouge::{Rouge, RougeType};
use tessera_metrics::wordnet::WordNet;

fn near(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn sacrebleu_readme_example() {
    let hyps = [
        "The dog bit the man.",
        "It wasn't surprising.",
        "The man had just bitten him.",
    ];
    let r1 = [
        "The dog bit the man.",
        "It was not unexpected.",
        "The man bit him first.",
    ];
    let r2 = [
        "The dog had bit the man.",
        "No one was surprised.",
        "The man had bitten the dog.",
    ];
    let refs: Vec<Vec<&str>> = (0..3).map(|i| vec![r1[i], r2[i]]).collect();
    let b = Bleu::default().corpus_score(&hyps, &refs).unwrap();
    assert!(near(b.score, 48.530827009929865, 1e-12), "{}", b.score);
    assert_eq!((b.sys_len, b.ref_len), (17, 18));
    let c = Chrf::default().corpus_score(&hyps, &refs).unwrap();
    assert!(near(c.score, 59.72751782684763, 1e-12), "{}", c.score);
    let cpp = Chrf {
        word_order: 2,
        ..Chrf::default()
    }
    .corpus_score(&hyps, &refs)
    .unwrap();
    assert!(near(cpp.score, 59.15310444399262, 1e-12), "{}", cpp.score);
    assert_eq!(
        Bleu::default().signature(Some(2)),
        "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    );
}

fn rouge(types: &[&str], stem: bool) -> Rouge {
    Rouge {
        types: types
            .iter()
            .map(|t| RougeType::from_name(t).unwrap())
            .collect(),
        use_stemmer: stem,
        threads: 1,
    }
}

#[test]
fn rouge_score_unit_cases() {
    let r = rouge(&["rouge1"], false).score("testing one two", "testing");
    assert!(
        near(r[0].precision, 1.0, 1e-12)
            && near(r[0].recall, 1.0 / 3.0, 1e-12)
            && near(r[0].fmeasure, 0.5, 1e-12)
    );
    let r = rouge(&["rouge2"], false).score("testing one two", "testing one");
    assert!(
        near(r[0].precision, 1.0, 1e-12)
            && near(r[0].recall, 0.5, 1e-12)
            && near(r[0].fmeasure, 2.0 / 3.0, 1e-12)
    );
    for t in ["rouge1", "rougeL"] {
        for pred in ["testing one", "testing two"] {
            let r = rouge(&[t], false).score("testing one two", pred);
            assert!(near(r[0].recall, 2.0 / 3.0, 1e-12) && near(r[0].fmeasure, 0.8, 1e-12));
        }
    }
    for t in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        let r = rouge(&[t], false).score("testing one two", "");
        assert_eq!(
            (r[0].precision, r[0].recall, r[0].fmeasure),
            (0.0, 0.0, 0.0)
        );
    }
    let m = rouge(&["rouge1", "rouge2", "rougeL"], false);
    let r = m.score_multi_with(
        &["first text", "first something"],
        "text first",
        &mut Default::default(),
    );
    assert!(
        near(r[0].fmeasure, 1.0, 1e-12)
            && near(r[1].fmeasure, 0.0, 1e-12)
            && near(r[2].fmeasure, 0.5, 1e-12)
    );
    let r = rouge(&["rougeLsum"], false).score("w1 w2 w3 w4 w5", "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5");
    assert!(near(r[0].recall, 0.8, 1e-12) && near(r[0].precision, 0.4, 1e-12));
    assert!(near(r[0].fmeasure, 0.5333, 1e-3));
    let s = rouge(&["rougeLsum"], true);
    assert!(near(
        s.score(
            "First sentence.\nSecond Sentence.",
            "Second sentence.\nFirst Sentence."
        )[0]
        .fmeasure,
        1.0,
        1e-9
    ));
    assert!(near(
        s.score(
            "First sentence. Second Sentence.",
            "Second sentence. First Sentence."
        )[0]
        .fmeasure,
        0.5,
        1e-9
    ));
    assert_eq!(RougeType::from_name("rouge9").unwrap(), RougeType::N(9));
}

#[test]
fn nltk_meteor_doctest() {
    let wn = WordNet::open_default().unwrap_or_else(|e| panic!("{e}"));
    let hyp = "It is a guide to action which ensures that the military always obeys the commands of the party";
    let reference =
        "It is a guide to action that ensures that the military will forever heed Party commands";
    let h: Vec<&str> = hyp.split(' ').collect();
    let r: Vec<&str> = reference.split(' ').collect();
    let s = Meteor::default().score(&[r], &h, &wn).unwrap();
    assert!(near(s, 0.6944, 5e-5), "{s}");
    let none = Meteor::default()
        .score(&[vec!["Hello", "world"]], &["no", "match"], &wn)
        .unwrap();
    assert_eq!(none, 0.0);
}

const SENTS: &[&str] = &[
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "It costs $3.50, or 1,000 yen — «cheap»!",
    "Y la tierra estaba desordenada y vacía, y las tinieblas estaban sobre la haz del abismo.",
    "我们这次住的是曙光别墅7201房。",
    "short",
    "",
];

fn perturbed(s: &str, k: usize) -> String {
    let mut w: Vec<&str> = s.split(' ').collect();
    if w.len() > 3 {
        w.remove(k % w.len());
        let n = w.len();
        w.swap(0, n - 1);
    }
    w.join(" ")
}

#[test]
fn identity_gives_maximum() {
    let hyps: Vec<&str> = SENTS.iter().copied().filter(|s| !s.is_empty()).collect();
    let refs: Vec<Vec<&str>> = hyps.iter().map(|h| vec![*h]).collect();
    for tok in ["13a", "intl", "zh", "char", "none"] {
        let b = Bleu {
            tokenizer: Tokenizer::from_name(tok).unwrap(),
            ..Bleu::default()
        };
        assert!(
            near(b.corpus_score(&hyps, &refs).unwrap().score, 100.0, 1e-9),
            "{tok}"
        );
    }
    for wo in [0, 2] {
        let c = Chrf {
            word_order: wo,
            ..Chrf::default()
        };
        assert!(near(
            c.corpus_score(&hyps, &refs).unwrap().score,
            100.0,
            1e-9
        ));
    }
    // ROUGE: texts with at least two [a-z0-9] tokens (rouge2 needs a bigram; the Chinese line
    // has a single token "7201" under rouge-score's tokenizer).
    let r = Rouge::default()
        .corpus_segments(&hyps[..4], &refs[..4])
        .unwrap();
    for seg in r {
        for p in seg {
            assert!(near(p.fmeasure, 1.0, 1e-12));
        }
    }
}

#[test]
fn ranges_order_and_threads() {
    let mut hyps = Vec::new();
    let mut refs = Vec::new();
    for k in 0..60 {
        let s = SENTS[k % SENTS.len()];
        if s.is_empty() {
            continue;
        }
        hyps.push(perturbed(s, k));
        refs.push(vec![s.to_string(), perturbed(s, k + 3)]);
    }
    let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
    let r: Vec<Vec<&str>> = refs
        .iter()
        .map(|v| v.iter().map(|s| s.as_str()).collect())
        .collect();
    let mut hr: Vec<&str> = h.clone();
    hr.reverse();
    let mut rr = r.clone();
    rr.reverse();
    for smooth in [Smooth::Exp, Smooth::Floor, Smooth::AddK, Smooth::None] {
        let b = Bleu {
            smooth,
            ..Bleu::default()
        };
        let s = b.corpus_score(&h, &r).unwrap();
        assert!((0.0..=100.0).contains(&s.score) && (0.0..=1.0).contains(&s.bp));
        // Segment order does not change corpus BLEU.
        assert_eq!(s, b.corpus_score(&hr, &rr).unwrap());
        // Nor does the thread count.
        assert_eq!(
            s,
            Bleu {
                threads: 4,
                ..b.clone()
            }
            .corpus_score(&h, &r)
            .unwrap()
        );
        for (x, y) in h.iter().zip(&r) {
            let e = Bleu {
                effective_order: true,
                ..b.clone()
            };
            let v = e.sentence_score(x, y).unwrap().score;
            assert!((0.0..=100.0 + 1e-9).contains(&v), "{v}");
        }
    }
    let c = Chrf::default();
    let s = c.corpus_score(&h, &r).unwrap().score;
    assert!((0.0..=100.0).contains(&s));
    assert_eq!(s, c.corpus_score(&hr, &rr).unwrap().score);
    let m = Rouge::default();
    for seg in m.corpus_segments(&h, &r).unwrap() {
        for p in seg {
            for x in [p.precision, p.recall, p.fmeasure] {
                assert!((0.0..=1.0).contains(&x));
            }
        }
    }
}

#[test]
fn more_references_never_lower_bleu_matches() {
    let h = ["the cat sat on the mat"];
    let one = Bleu::default()
        .corpus_score(&h, &[vec!["a cat sat on a mat"]])
        .unwrap();
    let two = Bleu::default()
        .corpus_score(&h, &[vec!["a cat sat on a mat", "the cat is on the mat"]])
        .unwrap();
    for k in 0..4 {
        assert!(two.counts[k] >= one.counts[k]);
    }
}
