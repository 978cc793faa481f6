//! Bad input gives clear errors through the command entry points, never a panic.

use std::path::{Path, PathBuf};

use tessera_metrics::commands::{
    self, BleuOptions, ChrfOptions, MeteorOptions, MeteorTokenize, RougeOptions,
};
use tessera_metrics::MetricsError;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tessera-metrics-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bleu(hyp: &Path, refs: &[PathBuf]) -> Result<commands::Output, MetricsError> {
    commands::bleu(&BleuOptions {
        hyp: hyp.into(),
        refs: refs.to_vec(),
        tokenize: "13a".into(),
        smooth: "exp".into(),
        smooth_value: None,
        lowercase: false,
        effective_order: false,
        segments: true,
        threads: 1,
    })
}

#[test]
fn errors_are_clear() {
    let d = Dir::new("bad");
    let h = d.file("h.txt", b"a b c\nd e f\n");
    let r2 = d.file("r2.txt", b"a b c\n");
    let e = bleu(&h, &[r2]).unwrap_err().to_string();
    assert!(
        e.contains("line count") && e.contains("2") && e.contains("1"),
        "{e}"
    );

    let empty = d.file("empty.txt", b"");
    let e = bleu(&empty, std::slice::from_ref(&h))
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");

    let bad = d.file("bad.txt", b"fine\nnot \xc3\x28 utf8\n");
    let e = bleu(&bad, std::slice::from_ref(&h))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid UTF-8 at line 2"), "{e}");

    let missing = d.0.join("nope.txt");
    let e = bleu(&missing, std::slice::from_ref(&h))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");

    let e = bleu(&h, &[]).unwrap_err().to_string();
    assert!(e.contains("--ref"), "{e}");

    let holes = d.file("holes.txt", b"a b c\n\n");
    let e = bleu(&h, std::slice::from_ref(&holes))
        .unwrap_err()
        .to_string();
    assert!(e.contains("segment 2") && e.contains("no reference"), "{e}");

    let e = commands::bleu(&BleuOptions {
        hyp: h.clone(),
        refs: vec![h.clone()],
        tokenize: "moses".into(),
        smooth: "exp".into(),
        smooth_value: None,
        lowercase: false,
        effective_order: false,
        segments: false,
        threads: 1,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown tokenizer"), "{e}");

    let e = commands::rouge(&RougeOptions {
        hyp: h.clone(),
        refs: vec![h.clone()],
        types: vec!["rougeX".into()],
        stemmer: false,
        newline_escape: false,
        bootstrap: None,
        segments: false,
        threads: 1,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid rouge type"), "{e}");

    let e = commands::meteor(&MeteorOptions {
        hyp: h.clone(),
        refs: vec![h.clone()],
        tokenize: MeteorTokenize::Whitespace,
        wordnet: Some(d.0.join("no-wordnet")),
        segments: false,
        threads: 1,
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("wordnet-base") && e.contains("TESSERA_WORDNET"),
        "{e}"
    );

    let g = d.file("g.txt", b"x\ny\n");
    let p = d.file("p.txt", b"x\n\n");
    let e = commands::classify(&p, &g).unwrap_err().to_string();
    assert!(e.contains("empty label"), "{e}");
    let p1 = d.file("p1.txt", b"x\n");
    assert!(commands::classify(&p1, &g)
        .unwrap_err()
        .to_string()
        .contains("line count"));

    let gc = d.file("g.conll", b"a\tB-X\nb\tO\n\nc\tO\n");
    let pc = d.file("p.conll", b"a\tB-X\n\nc\tO\n");
    let e = commands::ner(&pc, &gc).unwrap_err().to_string();
    assert!(e.contains("token count of sentence 1"), "{e}");
}

#[test]
fn variable_references_and_outputs() {
    let d = Dir::new("ok");
    let h = d.file(
        "h.txt",
        "The cat sat on the mat.\nÑandú corre rápido.\n".as_bytes(),
    );
    let r1 = d.file("r1.txt", "The cat sat on the mat.\n\n".as_bytes());
    let r2 = d.file(
        "r2.txt",
        "A cat sat on a mat.\nEl ñandú corre rápido.\n".as_bytes(),
    );
    let out = bleu(&h, &[r1.clone(), r2.clone()]).unwrap();
    let sig = out.json["signature"].as_str().unwrap();
    assert!(sig.starts_with("nrefs:var|"), "{sig}");
    for k in [
        "score",
        "precisions",
        "bp",
        "ratio",
        "sys_len",
        "ref_len",
        "counts",
        "totals",
        "signature",
    ] {
        assert!(out.json.get(k).is_some(), "missing {k}");
    }
    assert_eq!(out.json["segments"].as_array().unwrap().len(), 2);
    assert!(out.render(false).starts_with("BLEU|nrefs:var|"));

    let c = commands::chrf(&ChrfOptions {
        hyp: h.clone(),
        refs: vec![r1.clone(), r2.clone()],
        char_order: 6,
        word_order: 2,
        beta: 2,
        lowercase: false,
        whitespace: false,
        segments: true,
        threads: 2,
    })
    .unwrap();
    assert!(c.json["signature"].as_str().unwrap().contains("nw:2"));

    let r = commands::rouge(&RougeOptions {
        hyp: h.clone(),
        refs: vec![r1, r2],
        types: vec![
            "rouge1".into(),
            "rouge2".into(),
            "rougeL".into(),
            "rougeLsum".into(),
        ],
        stemmer: true,
        newline_escape: true,
        bootstrap: Some(0),
        segments: true,
        threads: 1,
    })
    .unwrap();
    for t in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        assert!(r.json[t]["mid"]["fmeasure"].is_number(), "{t}");
    }
}
