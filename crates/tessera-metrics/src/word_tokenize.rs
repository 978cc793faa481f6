//! NLTK's `NLTKWordTokenizer` (the improved Treebank tokenizer behind `nltk.word_tokenize`),
//! applied to a whole line as `word_tokenize(text, preserve_line=True)` does.
//!
//! Difference from `word_tokenize(text)` with its default `preserve_line=False`: NLTK first splits
//! the text into sentences with its trained Punkt model and then treats each sentence's final
//! period separately; here a line is one sentence, so a period ending a sentence in the middle of
//! a line stays attached to its word ("York." rather than "York", "."). With one sentence per line
//! the results are the same.

use std::sync::OnceLock;

use fancy_regex::Regex;

struct Rules {
    starting: Vec<(Regex, &'static str)>,
    punctuation: Vec<(Regex, &'static str)>,
    parens: (Regex, &'static str),
    dashes: (Regex, &'static str),
    ending: Vec<(Regex, &'static str)>,
    contractions: Vec<Regex>,
}

fn re(p: &str) -> Regex {
    Regex::new(p).expect("valid tokenizer regex")
}

fn rules() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| Rules {
        starting: vec![
            (re(r"([«“‘„]|[`]+)"), " ${1} "),
            (re(r#"^""#), "``"),
            (re(r"(``)"), " ${1} "),
            (re(r#"([ \(\[{<])("|'{2})"#), "${1} `` "),
            (
                re(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"),
                "${1} ",
            ),
        ],
        punctuation: vec![
            // `*+` (possessive) in NLTK's pattern, written as an atomic group.
            (
                re(r#"([^\.])(\.)((?>[\]\)}>"'»”’ ]*))\s*$"#),
                "${1} ${2} ${3} ",
            ),
            (re(r"([:,])([^\d])"), " ${1} ${2}"),
            (re(r"([:,])$"), " ${1} "),
            (re(r"\.{2,}"), " ${0} "),
            (re(r"[;@#$%&]"), " ${0} "),
            (re(r"[\x{2012}-\x{2015}]"), " ${0} "),
            (re(r#"([^\.])(\.)([\]\)}>"']*)\s*$"#), "${1} ${2}${3} "),
            (re(r"[?!]"), " ${0} "),
            (re(r"([^'])' "), "${1} ' "),
            (re(r"[*]"), " ${0} "),
        ],
        parens: (re(r"[\]\[\(\)\{\}<>]"), " ${0} "),
        dashes: (re(r"--"), " -- "),
        ending: vec![
            (re(r"([»”’])"), " ${1} "),
            (re(r"''"), " '' "),
            (re(r#"""#), " '' "),
            (re(r"\s+"), " "),
            (re(r"([^' ])('[sS]|'[mM]|'[dD]|') "), "${1} ${2} "),
            (
                re(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "),
                "${1} ${2} ",
            ),
        ],
        contractions: [
            r"(?i)\b(can)(not)\b",
            r"(?i)\b(d)('ye)\b",
            r"(?i)\b(gim)(me)\b",
            r"(?i)\b(gon)(na)\b",
            r"(?i)\b(got)(ta)\b",
            r"(?i)\b(lem)(me)\b",
            r"(?i)\b(more)('n)\b",
            r"(?i)\b(wan)(na)(?=\s)",
            r"(?i) ('t)(is)\b",
            r"(?i) ('t)(was)\b",
        ]
        .iter()
        .map(|p| re(p))
        .collect(),
    })
}

fn sub(text: String, r: &Regex, rep: &str) -> String {
    match r.replace_all(&text, rep) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(o) => o,
    }
}

/// Splits a line into words as `nltk.word_tokenize(line, preserve_line=True)`.
pub fn word_tokenize(line: &str) -> Vec<String> {
    let r = rules();
    let mut t = line.to_string();
    for (re, rep) in r.starting.iter().chain(&r.punctuation) {
        t = sub(t, re, rep);
    }
    t = sub(t, &r.parens.0, r.parens.1);
    t = sub(t, &r.dashes.0, r.dashes.1);
    t = format!(" {t} ");
    for (re, rep) in &r.ending {
        t = sub(t, re, rep);
    }
    for re in &r.contractions {
        t = sub(t, re, " ${1} ${2} ");
    }
    crate::text::py_split(&t).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::word_tokenize;

    #[test]
    fn nltk_doc_example() {
        let s = "Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            word_tokenize(s),
            vec![
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in",
                "New", "York.", "Please", "buy", "me", "two", "of", "them.", "Thanks", "."
            ]
        );
        assert_eq!(
            word_tokenize("I can't go, \"they\" said."),
            vec!["I", "ca", "n't", "go", ",", "``", "they", "''", "said", "."]
        );
    }
}
