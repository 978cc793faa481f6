//! sacreBLEU's tokenizers: `13a` (mteval-v13a, the default), `intl` (mteval-v14 international),
//! `zh`, `char` and `none`. Each returns the tokenized line as one space-joined string, as
//! sacreBLEU does; BLEU then splits it on whitespace.

use std::sync::OnceLock;

use regex::Regex;

use crate::error::{MetricsError, Result};
use crate::text::py_split;

/// Which tokenizer to apply before counting n-grams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tokenizer {
    /// mteval-v13a: separates punctuation and symbols, keeps decimal points and commas in numbers.
    #[default]
    Mteval13a,
    /// mteval-v14 international: Unicode punctuation and symbol classes.
    Intl,
    /// Chinese: each CJK character is a token, the rest as `13a`.
    Zh,
    /// Every character is a token.
    Char,
    /// Whitespace only.
    None,
}

impl Tokenizer {
    /// Parses sacreBLEU's name (`13a`, `intl`, `zh`, `char`, `none`).
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "13a" => Self::Mteval13a,
            "intl" => Self::Intl,
            "zh" => Self::Zh,
            "char" => Self::Char,
            "none" => Self::None,
            _ => {
                return Err(MetricsError::InvalidOption(format!(
                    "unknown tokenizer {name:?} (expected 13a, intl, zh, char or none)"
                )))
            }
        })
    }

    /// sacreBLEU's name of the tokenizer, as in the signature.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mteval13a => "13a",
            Self::Intl => "intl",
            Self::Zh => "zh",
            Self::Char => "char",
            Self::None => "none",
        }
    }

    /// Tokenizes one (already lowercased and right-stripped) line into `out`: tokens separated by
    /// single spaces, as sacreBLEU's tokenizer returns them (except `none`, which returns the
    /// line unchanged, as sacreBLEU does).
    pub fn tokenize_into(self, line: &str, out: &mut String) {
        out.clear();
        if self == Self::None {
            out.push_str(line);
            return;
        }
        self.for_each_token(line, &mut |t| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(t);
        });
    }

    /// Calls `emit` for each token of the tokenized line, in order: what BLEU counts after
    /// splitting sacreBLEU's tokenized string on whitespace.
    pub fn for_each_token(self, line: &str, emit: &mut dyn FnMut(&str)) {
        match self {
            Self::Mteval13a => tokenize_13a(line, emit),
            Self::Intl => tokenize_intl(line, emit),
            Self::Zh => tokenize_zh(line, emit),
            Self::Char => {
                let mut buf = [0u8; 4];
                for c in line.chars().filter(|c| !crate::text::is_py_space(*c)) {
                    emit(c.encode_utf8(&mut buf));
                }
            }
            Self::None => py_split(line).for_each(emit),
        }
    }

    /// Tokenizes one line and returns the result.
    pub fn tokenize(self, line: &str) -> String {
        let mut s = String::new();
        self.tokenize_into(line, &mut s);
        s
    }
}

/// Characters the first 13a rule surrounds with spaces: `[\{-\~\[-\` -\&\(-\+\:-\@\/]`.
#[inline]
fn is_13a_symbol(b: u8) -> bool {
    matches!(b, 0x7b..=0x7e | 0x5b..=0x60 | 0x20..=0x26 | 0x28..=0x2b | 0x3a..=0x40 | b'/')
}

thread_local! {
    static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Python whitespace among ASCII bytes (`\t\n\v\f\r`, U+001C..U+001F, space).
#[inline]
fn is_ascii_py_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | 0x1c..=0x20)
}

/// Emits the whitespace-separated tokens of `s` (valid UTF-8 by construction).
fn emit_tokens(s: &[u8], emit: &mut dyn FnMut(&str)) {
    if s.is_ascii() {
        for t in s.split(|&b| is_ascii_py_space(b)).filter(|t| !t.is_empty()) {
            emit(std::str::from_utf8(t).unwrap_or_default());
        }
    } else {
        // Only ASCII bytes were inserted at character boundaries, so this is still UTF-8.
        py_split(std::str::from_utf8(s).unwrap_or_default()).for_each(emit);
    }
}

#[inline]
fn is_punct(b: u8) -> bool {
    b == b'.' || b == b','
}

/// Rule 2, `([^0-9])([\.,])` -> `"\1 \2 "`, applied as `re.sub` does (left to right, no
/// overlaps): a match can only start right before a `.`/`,`, and not inside the previous match.
fn rule2(a: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut done = 0; // bytes of `a` already written
    for p in 1..a.len() {
        if is_punct(a[p]) && p > done && !a[p - 1].is_ascii_digit() {
            out.extend_from_slice(&a[done..p]);
            out.extend_from_slice(&[b' ', a[p], b' ']);
            done = p + 1;
        }
    }
    out.extend_from_slice(&a[done..]);
}

/// Rule 3, `([\.,])([^0-9])` -> `" \1 \2"`.
fn rule3(a: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut done = 0;
    let mut p = 0;
    while p + 1 < a.len() {
        if is_punct(a[p]) && !a[p + 1].is_ascii_digit() {
            out.extend_from_slice(&a[done..p]);
            out.extend_from_slice(&[b' ', a[p], b' ', a[p + 1]]);
            done = p + 2;
            p += 2;
        } else {
            p += 1;
        }
    }
    out.extend_from_slice(&a[done..]);
}

/// Rule 4, `([0-9])(-)` -> `"\1 \2 "`.
fn rule4(a: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut done = 0;
    for q in 1..a.len() {
        if a[q] == b'-' && q > done && a[q - 1].is_ascii_digit() {
            out.extend_from_slice(&a[done..q]);
            out.extend_from_slice(b" - ");
            done = q + 1;
        }
    }
    out.extend_from_slice(&a[done..]);
}

/// The regex post-tokenizer shared by `13a` and `zh` (sacreBLEU's `TokenizerRegexp`). Works on
/// bytes: every character the rules look at is ASCII, and UTF-8 continuation bytes never match,
/// so the result equals the character-level regex substitutions (each rule is applied to the
/// whole line, left to right, without overlapping matches, as `re.sub` does).
fn regexp_post(line: &[u8], pad: bool, emit: &mut dyn FnMut(&str)) {
    BUFS.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (a, b) = &mut *guard;
        a.clear();
        a.reserve(line.len() * 3 + 8);
        // 13a wraps the line in spaces (`f' {line} '`); they matter to rules 2 and 3.
        if pad {
            a.push(b' ');
        }
        // 1. symbols -> " c "
        let mut done = 0;
        for (i, &c) in line.iter().enumerate() {
            if is_13a_symbol(c) {
                a.extend_from_slice(&line[done..i]);
                a.extend_from_slice(&[b' ', c, b' ']);
                done = i + 1;
            }
        }
        a.extend_from_slice(&line[done..]);
        if pad {
            a.push(b' ');
        }
        if a.iter().any(|&c| is_punct(c)) {
            rule2(a, b);
            rule3(b, a);
        }
        if a.contains(&b'-') {
            rule4(a, b);
            std::mem::swap(a, b);
        }
        emit_tokens(a, emit);
    })
}

fn tokenize_13a(line: &str, emit: &mut dyn FnMut(&str)) {
    if !line.bytes().any(|b| matches!(b, b'<' | b'\n' | b'&')) {
        return regexp_post(line.as_bytes(), true, emit);
    }
    let mut l = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if l.contains('&') {
        l = l
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    regexp_post(l.as_bytes(), true, emit);
}

/// sacreBLEU's `_UCODE_RANGES` for `zh`, as its string comparisons evaluate them. Two entries
/// were meant as supplementary-plane ranges but Python parses `'\u20000'` as two characters,
/// so they compare as U+2001..=U+2A6D and U+2F81..=U+2FA1; we keep that behaviour.
const ZH_RANGES: &[(u32, u32)] = &[
    (0x3400, 0x4db5),
    (0x4e00, 0x9fa5),
    (0x9fa6, 0x9fbb),
    (0xf900, 0xfa2d),
    (0xfa30, 0xfa6a),
    (0xfa70, 0xfad9),
    (0x2001, 0x2a6d),
    (0x2f81, 0x2fa1),
    (0xff00, 0xffef),
    (0x2e80, 0x2eff),
    (0x3000, 0x303f),
    (0x31c0, 0x31ef),
    (0x2f00, 0x2fdf),
    (0x2ff0, 0x2fff),
    (0x3100, 0x312f),
    (0x31a0, 0x31bf),
    (0xfe10, 0xfe1f),
    (0xfe30, 0xfe4f),
    (0x2600, 0x26ff),
    (0x2700, 0x27bf),
    (0x3200, 0x32ff),
    (0x3300, 0x33ff),
];

/// Whether sacreBLEU's `zh` tokenizer treats `c` as a Chinese character.
pub fn is_zh_char(c: char) -> bool {
    let u = c as u32;
    ZH_RANGES.iter().any(|&(a, b)| a <= u && u <= b)
}

fn tokenize_zh(line: &str, emit: &mut dyn FnMut(&str)) {
    let line = crate::text::py_strip(line);
    let mut s = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_zh_char(c) {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    regexp_post(s.as_bytes(), false, emit);
}

fn intl_regexes() -> &'static [(Regex, &'static str); 3] {
    static RE: OnceLock<[(Regex, &'static str); 3]> = OnceLock::new();
    RE.get_or_init(|| {
        [
            (
                Regex::new(r"(\P{N})(\p{P})").expect("valid regex"),
                "$1 $2 ",
            ),
            (
                Regex::new(r"(\p{P})(\P{N})").expect("valid regex"),
                " $1 $2",
            ),
            (Regex::new(r"(\p{S})").expect("valid regex"), " $1 "),
        ]
    })
}

fn tokenize_intl(line: &str, emit: &mut dyn FnMut(&str)) {
    let mut s = std::borrow::Cow::Borrowed(line);
    for (re, rep) in intl_regexes() {
        if let std::borrow::Cow::Owned(o) = re.replace_all(&s, *rep) {
            s = std::borrow::Cow::Owned(o);
        }
    }
    py_split(&s).for_each(emit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tok: Tokenizer, s: &str) -> String {
        tok.tokenize(s)
    }

    #[test]
    fn t13a_cases() {
        let k = Tokenizer::Mteval13a;
        assert_eq!(t(k, "Hello, world."), "Hello , world .");
        assert_eq!(
            t(k, "It costs $3.50, or 1,000 yen."),
            "It costs $ 3.50 , or 1,000 yen ."
        );
        assert_eq!(t(k, "a-b 1-2 x--y"), "a-b 1 - 2 x--y");
        assert_eq!(t(k, "&quot;hi&quot; &amp;lt;"), "\" hi \" <");
        assert_eq!(t(k, "don't (yes)"), "don't ( yes )");
        assert_eq!(t(k, "a.. b"), "a . . b");
        assert_eq!(t(k, "café."), "café .");
        // The padding spaces of 13a matter at the line ends (values from sacreBLEU).
        assert_eq!(t(k, ".5 test 5."), ". 5 test 5 .");
        assert_eq!(t(k, ",a 3,"), ", a 3 ,");
        assert_eq!(t(Tokenizer::Zh, ".5 test 5."), ".5 test 5.");
        assert_eq!(t(Tokenizer::Zh, ",a 3,"), ", a 3,");
    }

    #[test]
    fn zh_and_char() {
        assert_eq!(t(Tokenizer::Zh, " 我爱北京。ok "), "我 爱 北 京 。 ok");
        assert_eq!(t(Tokenizer::Char, "ab c"), "a b c");
        assert!(is_zh_char('\u{2001}') && is_zh_char('\u{2a6d}') && !is_zh_char('\u{2a6e}'));
    }

    #[test]
    fn intl_cases() {
        assert_eq!(
            t(Tokenizer::Intl, "Hello, world! 3.5 «x»"),
            "Hello , world ! 3.5 « x »"
        );
        assert_eq!(t(Tokenizer::Intl, "a+b"), "a + b");
    }
}
