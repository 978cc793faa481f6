//! The logic behind `tessera eval bleu|chrf|rouge|meteor|classify|ner`: read the files, score,
//! and render plain text or JSON. The CLI only parses arguments and prints.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::bleu::{common_nrefs, Bleu, Smooth, Tokenizer};
use crate::chrf::Chrf;
use crate::classify::classification_report;
use crate::error::{MetricsError, Result};
use crate::input::{check_same_len, Corpus, LineFile};
use crate::meteor::Meteor;
use crate::rouge::{mean_scores, Prf, Rouge, RougeType};
use crate::rouge_bootstrap::Bootstrap;
use crate::seqeval::{ner_report, parse_conll};
use crate::wordnet::WordNet;

/// What a command prints: `text` by default, `json` with `--json`.
#[derive(Clone, Debug)]
pub struct Output {
    /// Machine-readable result.
    pub json: Value,
    /// Human-readable result.
    pub text: String,
}

impl Output {
    /// The text to print (`json` selects pretty JSON).
    pub fn render(&self, json: bool) -> String {
        if json {
            serde_json::to_string_pretty(&self.json).unwrap_or_else(|_| "{}".into())
        } else {
            self.text.clone()
        }
    }
}

/// Options of `tessera eval bleu`.
#[derive(Clone, Debug)]
pub struct BleuOptions {
    /// Hypothesis file.
    pub hyp: PathBuf,
    /// Reference files.
    pub refs: Vec<PathBuf>,
    /// Tokenizer name.
    pub tokenize: String,
    /// Smoothing name.
    pub smooth: String,
    /// Smoothing value.
    pub smooth_value: Option<f64>,
    /// Lowercase.
    pub lowercase: bool,
    /// Effective order for the corpus score.
    pub effective_order: bool,
    /// Add per-segment sentence BLEU (with effective order, as `sacrebleu.sentence_bleu`).
    pub segments: bool,
    /// Threads (1 = single, 0 = all cores).
    pub threads: usize,
}

fn bleu_json(s: &crate::bleu::BleuScore, signature: Option<&str>) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let (Some(sig), Some(o)) = (signature, v.as_object_mut()) {
        o.insert("signature".into(), json!(sig));
    }
    v
}

/// `tessera eval bleu`.
pub fn bleu(o: &BleuOptions) -> Result<Output> {
    let corpus = Corpus::read(&o.hyp, &o.refs)?;
    let (hyps, refs) = corpus.segments()?;
    let m = Bleu {
        tokenizer: Tokenizer::from_name(&o.tokenize)?,
        lowercase: o.lowercase,
        smooth: Smooth::from_name(&o.smooth)?,
        smooth_value: o.smooth_value,
        effective_order: o.effective_order,
        threads: o.threads,
        ..Bleu::default()
    };
    let s = m.corpus_score(&hyps, &refs)?;
    let sig = m.signature(common_nrefs(&refs));
    let mut j = bleu_json(&s, Some(&sig));
    let prec: Vec<String> = s.precisions.iter().map(|p| format!("{p:.1}")).collect();
    let mut text = format!(
        "BLEU|{sig} = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
        s.score,
        prec.join("/"),
        s.bp,
        s.ratio,
        s.sys_len,
        s.ref_len
    );
    if o.segments {
        let sm = Bleu {
            effective_order: true,
            ..m.clone()
        };
        let stats = sm.corpus_stats(&hyps, &refs)?;
        let segs: Vec<Value> = stats
            .iter()
            .map(|st| bleu_json(&sm.compute(st), None))
            .collect();
        for (i, st) in stats.iter().enumerate() {
            text.push_str(&format!("\n{}\t{:.2}", i + 1, sm.compute(st).score));
        }
        j["segments"] = Value::Array(segs);
    }
    Ok(Output { json: j, text })
}

/// Options of `tessera eval chrf`.
#[derive(Clone, Debug)]
pub struct ChrfOptions {
    /// Hypothesis file.
    pub hyp: PathBuf,
    /// Reference files.
    pub refs: Vec<PathBuf>,
    /// Character n-gram order (6).
    pub char_order: usize,
    /// Word n-gram order (0 = chrF, 2 = chrF++).
    pub word_order: usize,
    /// Beta (2).
    pub beta: u32,
    /// Lowercase.
    pub lowercase: bool,
    /// Keep whitespace in character n-grams.
    pub whitespace: bool,
    /// Add per-segment scores.
    pub segments: bool,
    /// Threads.
    pub threads: usize,
}

/// `tessera eval chrf`.
pub fn chrf(o: &ChrfOptions) -> Result<Output> {
    let corpus = Corpus::read(&o.hyp, &o.refs)?;
    let (hyps, refs) = corpus.segments()?;
    let m = Chrf {
        char_order: o.char_order,
        word_order: o.word_order,
        beta: o.beta,
        lowercase: o.lowercase,
        whitespace: o.whitespace,
        eps_smoothing: false,
        threads: o.threads,
    };
    let stats = m.corpus_stats(&hyps, &refs)?;
    let score = m.f_score(&crate::bleu::sum_stats(&stats));
    let sig = m.signature(common_nrefs(&refs));
    let mut j = json!({"score": score, "signature": sig});
    let mut text = format!("{}|{sig} = {score:.2}", m.name());
    if o.segments {
        let segs: Vec<f64> = stats.iter().map(|s| m.f_score(s)).collect();
        for (i, s) in segs.iter().enumerate() {
            text.push_str(&format!("\n{}\t{s:.2}", i + 1));
        }
        j["segments"] = Value::Array(segs.iter().map(|s| json!({ "score": s })).collect());
    }
    Ok(Output { json: j, text })
}

/// Options of `tessera eval rouge`.
#[derive(Clone, Debug)]
pub struct RougeOptions {
    /// Hypothesis file, one summary per line (see `newline_escape` for ROUGE-Lsum sentences).
    pub hyp: PathBuf,
    /// Reference files.
    pub refs: Vec<PathBuf>,
    /// Types, e.g. `["rouge1","rouge2","rougeL","rougeLsum"]`.
    pub types: Vec<String>,
    /// Porter stemmer.
    pub stemmer: bool,
    /// Replace the two characters `\n` in lines by a newline (sentence break for ROUGE-Lsum).
    pub newline_escape: bool,
    /// BootstrapAggregator instead of the plain mean, with this seed.
    pub bootstrap: Option<u32>,
    /// Add per-segment scores.
    pub segments: bool,
    /// Threads.
    pub threads: usize,
}

fn prf_json(p: &Prf) -> Value {
    json!({"precision": p.precision, "recall": p.recall, "fmeasure": p.fmeasure})
}

/// `tessera eval rouge`.
pub fn rouge(o: &RougeOptions) -> Result<Output> {
    let corpus = Corpus::read(&o.hyp, &o.refs)?;
    let (hyps, refs) = corpus.segments()?;
    let expand = |s: &str| -> String {
        if o.newline_escape {
            s.replace("\\n", "\n")
        } else {
            s.to_string()
        }
    };
    let hyps_owned: Vec<String> = hyps.iter().map(|s| expand(s)).collect();
    let refs_owned: Vec<Vec<String>> = refs
        .iter()
        .map(|r| r.iter().map(|s| expand(s)).collect())
        .collect();
    let hyps: Vec<&str> = hyps_owned.iter().map(|s| s.as_str()).collect();
    let refs: Vec<Vec<&str>> = refs_owned
        .iter()
        .map(|r| r.iter().map(|s| s.as_str()).collect())
        .collect();
    let types = o
        .types
        .iter()
        .map(|t| RougeType::from_name(t))
        .collect::<Result<Vec<_>>>()?;
    let m = Rouge {
        types: types.clone(),
        use_stemmer: o.stemmer,
        threads: o.threads,
    };
    let segs = m.corpus_segments(&hyps, &refs)?;
    let mut j = json!({});
    let mut text = String::new();
    if let Some(seed) = o.bootstrap {
        let agg = Bootstrap {
            seed,
            ..Bootstrap::default()
        }
        .aggregate(&segs)?;
        for (t, a) in types.iter().zip(&agg) {
            j[t.name()] = json!({"low": prf_json(&a.low), "mid": prf_json(&a.mid), "high": prf_json(&a.high)});
            text.push_str(&format!(
                "{}: P {:.4} R {:.4} F {:.4} (95% CI F {:.4}-{:.4})\n",
                t.name(),
                a.mid.precision,
                a.mid.recall,
                a.mid.fmeasure,
                a.low.fmeasure,
                a.high.fmeasure
            ));
        }
    } else {
        for (t, p) in types.iter().zip(mean_scores(&segs)) {
            j[t.name()] = prf_json(&p);
            text.push_str(&format!(
                "{}: P {:.4} R {:.4} F {:.4}\n",
                t.name(),
                p.precision,
                p.recall,
                p.fmeasure
            ));
        }
    }
    if o.segments {
        let list: Vec<Value> = segs
            .iter()
            .map(|s| {
                let mut v = json!({});
                for (t, p) in types.iter().zip(s) {
                    v[t.name()] = prf_json(p);
                }
                v
            })
            .collect();
        for (i, s) in segs.iter().enumerate() {
            let f: Vec<String> = s.iter().map(|p| format!("{:.4}", p.fmeasure)).collect();
            text.push_str(&format!("{}\t{}\n", i + 1, f.join("\t")));
        }
        j["segments"] = Value::Array(list);
    }
    Ok(Output {
        json: j,
        text: text.trim_end().to_string(),
    })
}

/// How METEOR splits lines into words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeteorTokenize {
    /// Python's `str.split()` (NLTK's function takes pre-tokenized input).
    Whitespace,
    /// NLTK's Treebank-style word tokenizer (see [`crate::word_tokenize`]).
    Word,
}

/// Options of `tessera eval meteor`.
#[derive(Clone, Debug)]
pub struct MeteorOptions {
    /// Hypothesis file.
    pub hyp: PathBuf,
    /// Reference files.
    pub refs: Vec<PathBuf>,
    /// Tokenization.
    pub tokenize: MeteorTokenize,
    /// WordNet folder (default: `$TESSERA_WORDNET` or `/usr/share/wordnet`).
    pub wordnet: Option<PathBuf>,
    /// Add per-segment scores.
    pub segments: bool,
    /// Threads.
    pub threads: usize,
}

/// `tessera eval meteor`: mean of segment scores.
pub fn meteor(o: &MeteorOptions) -> Result<Output> {
    let corpus = Corpus::read(&o.hyp, &o.refs)?;
    let (hyps, refs) = corpus.segments()?;
    let wn = WordNet::open(o.wordnet.clone().unwrap_or_else(WordNet::default_dir))?;
    let split = |s: &str| -> Vec<String> {
        match o.tokenize {
            MeteorTokenize::Whitespace => crate::text::py_split(s).map(str::to_string).collect(),
            MeteorTokenize::Word => crate::word_tokenize::word_tokenize(s),
        }
    };
    let m = Meteor::default();
    let scores = crate::parallel::try_map_segments(
        hyps.len(),
        o.threads,
        || (),
        |_, i| {
            let h = split(hyps[i]);
            let rs: Vec<Vec<String>> = refs[i].iter().map(|r| split(r)).collect();
            let hv: Vec<&str> = h.iter().map(|s| s.as_str()).collect();
            let rv: Vec<Vec<&str>> = rs
                .iter()
                .map(|r| r.iter().map(|s| s.as_str()).collect())
                .collect();
            m.score(&rv, &hv, &wn)
        },
    )?;
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let mut j = json!({ "score": mean });
    let mut text = format!("METEOR = {mean:.4}");
    if o.segments {
        for (i, s) in scores.iter().enumerate() {
            text.push_str(&format!("\n{}\t{s:.4}", i + 1));
        }
        j["segments"] = Value::Array(scores.iter().map(|s| json!({ "score": s })).collect());
    }
    Ok(Output { json: j, text })
}

/// `tessera eval classify`: one label per line in each file.
pub fn classify(pred: &std::path::Path, gold: &std::path::Path) -> Result<Output> {
    let (pf, gf) = (LineFile::read(pred)?, LineFile::read(gold)?);
    let (p, g) = (pf.lines(), gf.lines());
    check_same_len(&pf, p.len(), &gf, g.len())?;
    for (f, lines) in [(&pf, &p), (&gf, &g)] {
        if let Some(i) = lines.iter().position(|l| l.trim().is_empty()) {
            return Err(MetricsError::Parse {
                path: f.path.display().to_string(),
                line: i + 1,
                msg: "empty label".into(),
            });
        }
    }
    let p: Vec<&str> = p.iter().map(|s| s.trim()).collect();
    let g: Vec<&str> = g.iter().map(|s| s.trim()).collect();
    let r = classification_report(&g, &p)?;
    let mut text = format!("accuracy {:.4} ({} items)\n", r.accuracy, g.len());
    text.push_str(&format!(
        "{:<16} {:>9} {:>9} {:>9} {:>9}\n",
        "", "precision", "recall", "f1", "support"
    ));
    let row = |name: &str, c: &crate::classify::ClassScores| {
        format!(
            "{name:<16} {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
            c.precision, c.recall, c.f1, c.support
        )
    };
    for (l, c) in &r.per_class {
        text.push_str(&row(l, c));
    }
    text.push_str(&row("micro avg", &r.micro));
    text.push_str(&row("macro avg", &r.macro_avg));
    text.push_str(&row("weighted avg", &r.weighted));
    Ok(Output {
        json: serde_json::to_value(&r).unwrap_or(Value::Null),
        text: text.trim_end().to_string(),
    })
}

/// `tessera eval ner`: CoNLL files (token, tag), same sentences and tokens.
pub fn ner(pred: &std::path::Path, gold: &std::path::Path) -> Result<Output> {
    let (pt, gt) = (
        crate::input::read_text(pred)?,
        crate::input::read_text(gold)?,
    );
    let ps = parse_conll(&pt, &pred.display().to_string())?;
    let gs = parse_conll(&gt, &gold.display().to_string())?;
    let p: Vec<Vec<String>> = ps.into_iter().map(|s| s.tags).collect();
    let g: Vec<Vec<String>> = gs.into_iter().map(|s| s.tags).collect();
    let r = ner_report(&g, &p)?;
    let mut text = format!(
        "entity F1 {:.4} (P {:.4} R {:.4}, {} gold entities); token accuracy {:.4}\n",
        r.micro.f1, r.micro.precision, r.micro.recall, r.micro.support, r.accuracy
    );
    for (t, c) in &r.per_type {
        text.push_str(&format!(
            "{t:<16} {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
            c.precision, c.recall, c.f1, c.support
        ));
    }
    Ok(Output {
        json: serde_json::to_value(&r).unwrap_or(Value::Null),
        text: text.trim_end().to_string(),
    })
}
