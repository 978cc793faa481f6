//! The Porter stemmer as NLTK 3.10 implements it in its default `NLTK_EXTENSIONS` mode
//! (the one `PorterStemmer()` gives, used by rouge-score and by NLTK's METEOR), including its
//! irregular forms and its departures from the original algorithm.

/// NLTK's irregular forms: word -> stem, checked before the algorithm runs.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// Stems one word as `nltk.stem.PorterStemmer().stem(word)` (lowercases first).
pub fn stem(word: &str) -> String {
    let lower = crate::text::py_lower(word);
    if let Some(&(_, s)) = IRREGULAR.iter().find(|(w, _)| *w == lower) {
        return s.to_string();
    }
    // NLTK compares the length of the word as given, before lowercasing.
    if crate::text::py_len(word) <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// NLTK's `_is_consonant`.
fn is_consonant(w: &[char], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] == 'y' {
        let mut negate = false;
        while i > 0 && w[i] == 'y' {
            negate = !negate;
            i -= 1;
        }
        return is_vowel(w[i]) == negate;
    }
    true
}

/// NLTK's `_consonant_flags`, used by the measure and the vowel test.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut f: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let v = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !f[i - 1]
        } else {
            true
        };
        f.push(v);
    }
    f
}

/// m in [C](VC)^m[V]: the number of "vc" transitions.
fn measure(w: &[char]) -> usize {
    let f = consonant_flags(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    !consonant_flags(w).iter().all(|&c| c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suf: &str) -> bool {
    let n = suf.chars().count();
    w.len() >= n && w[w.len() - n..].iter().copied().eq(suf.chars())
}

fn cut(w: &[char], suf: &str) -> Vec<char> {
    w[..w.len() - suf.chars().count()].to_vec()
}

fn with(mut stem: Vec<char>, rep: &str) -> Vec<char> {
    stem.extend(rep.chars());
    stem
}

/// A rule condition on the stem left after removing the suffix.
#[derive(Clone, Copy)]
enum Cond {
    Always,
    /// measure(stem) > 0
    M0,
    /// measure(stem) > 1
    M1,
    /// measure(stem) > 1 and stem ends in s or t
    Ion,
    /// step 1c, NLTK: len(stem) > 1 and last letter a consonant
    Y,
    /// the fixed answer computed from the whole word (NLTK's closures over `word`)
    Fixed(bool),
    /// step 1b: measure(stem) == 1 and stem ends cvc
    M1Cvc,
}

fn holds(c: Cond, stem: &[char]) -> bool {
    match c {
        Cond::Always => true,
        Cond::M0 => measure(stem) > 0,
        Cond::M1 => measure(stem) > 1,
        Cond::Ion => measure(stem) > 1 && matches!(stem.last(), Some('s' | 't')),
        Cond::Y => stem.len() > 1 && is_consonant(stem, stem.len() - 1),
        Cond::Fixed(b) => b,
        Cond::M1Cvc => measure(stem) == 1 && ends_cvc(stem),
    }
}

/// NLTK's `_apply_rule_list`: the first rule whose suffix matches decides (applies or stops).
/// The suffix `*d` means "ends in a double consonant" (two letters removed).
fn apply_rules(w: Vec<char>, rules: &[(&str, &str, Cond)]) -> Vec<char> {
    for &(suf, rep, cond) in rules {
        if suf == "*d" && ends_double_consonant(&w) {
            let stem = w[..w.len() - 2].to_vec();
            return if holds(cond, &stem) {
                with(stem, rep)
            } else {
                w
            };
        }
        if ends_with(&w, suf) {
            let stem = cut(&w, suf);
            return if holds(cond, &stem) {
                with(stem, rep)
            } else {
                w
            };
        }
    }
    w
}

fn step1a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ies") && w.len() == 4 {
        return with(cut(&w, "ies"), "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", Cond::Always),
            ("ies", "i", Cond::Always),
            ("ss", "ss", Cond::Always),
            ("s", "", Cond::Always),
        ],
    )
}

fn step1b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ied") {
        return if w.len() == 4 {
            with(cut(&w, "ied"), "ie")
        } else {
            with(cut(&w, "ied"), "i")
        };
    }
    if ends_with(&w, "eed") {
        let stem = cut(&w, "eed");
        return if measure(&stem) > 0 {
            with(stem, "ee")
        } else {
            w
        };
    }
    let mut inter = None;
    for suf in ["ed", "ing"] {
        if ends_with(&w, suf) {
            let s = cut(&w, suf);
            if contains_vowel(&s) {
                inter = Some(s);
                break;
            }
        }
    }
    let Some(stem) = inter else { return w };
    let last: String = stem.last().map(|c| c.to_string()).unwrap_or_default();
    let keep_double = !matches!(stem.last(), Some('l' | 's' | 'z'));
    apply_rules(
        stem,
        &[
            ("at", "ate", Cond::Always),
            ("bl", "ble", Cond::Always),
            ("iz", "ize", Cond::Always),
            ("*d", &last, Cond::Fixed(keep_double)),
            ("", "e", Cond::M1Cvc),
        ],
    )
}

fn step1c(w: Vec<char>) -> Vec<char> {
    apply_rules(w, &[("y", "i", Cond::Y)])
}

fn step2(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "alli") && measure(&cut(&w, "alli")) > 0 {
        return step2(with(cut(&w, "alli"), "al"));
    }
    // NLTK's "logi" rule tests the word minus its last three letters.
    let logi = w.len() >= 3 && measure(&w[..w.len() - 3]) > 0;
    apply_rules(
        w,
        &[
            ("ational", "ate", Cond::M0),
            ("tional", "tion", Cond::M0),
            ("enci", "ence", Cond::M0),
            ("anci", "ance", Cond::M0),
            ("izer", "ize", Cond::M0),
            ("bli", "ble", Cond::M0),
            ("alli", "al", Cond::M0),
            ("entli", "ent", Cond::M0),
            ("eli", "e", Cond::M0),
            ("ousli", "ous", Cond::M0),
            ("ization", "ize", Cond::M0),
            ("ation", "ate", Cond::M0),
            ("ator", "ate", Cond::M0),
            ("alism", "al", Cond::M0),
            ("iveness", "ive", Cond::M0),
            ("fulness", "ful", Cond::M0),
            ("ousness", "ous", Cond::M0),
            ("aliti", "al", Cond::M0),
            ("iviti", "ive", Cond::M0),
            ("biliti", "ble", Cond::M0),
            ("fulli", "ful", Cond::M0),
            ("logi", "log", Cond::Fixed(logi)),
        ],
    )
}

fn step3(w: Vec<char>) -> Vec<char> {
    apply_rules(
        w,
        &[
            ("icate", "ic", Cond::M0),
            ("ative", "", Cond::M0),
            ("alize", "al", Cond::M0),
            ("iciti", "ic", Cond::M0),
            ("ical", "ic", Cond::M0),
            ("ful", "", Cond::M0),
            ("ness", "", Cond::M0),
        ],
    )
}

fn step4(w: Vec<char>) -> Vec<char> {
    apply_rules(
        w,
        &[
            ("al", "", Cond::M1),
            ("ance", "", Cond::M1),
            ("ence", "", Cond::M1),
            ("er", "", Cond::M1),
            ("ic", "", Cond::M1),
            ("able", "", Cond::M1),
            ("ible", "", Cond::M1),
            ("ant", "", Cond::M1),
            ("ement", "", Cond::M1),
            ("ment", "", Cond::M1),
            ("ent", "", Cond::M1),
            ("ion", "", Cond::Ion),
            ("ou", "", Cond::M1),
            ("ism", "", Cond::M1),
            ("ate", "", Cond::M1),
            ("iti", "", Cond::M1),
            ("ous", "", Cond::M1),
            ("ive", "", Cond::M1),
            ("ize", "", Cond::M1),
        ],
    )
}

fn step5a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "e") {
        let stem = cut(&w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w
}

fn step5b(w: Vec<char>) -> Vec<char> {
    let cond = !w.is_empty() && measure(&w[..w.len() - 1]) > 1;
    apply_rules(w, &[("ll", "l", Cond::Fixed(cond))])
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn classic_examples() {
        let cases = [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("conflated", "conflat"),
            ("troubled", "troubl"),
            ("sized", "size"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("running", "run"),
            ("dying", "die"),
            ("skies", "sky"),
            ("Running", "run"),
            ("a", "a"),
            ("is", "is"),
        ];
        for (w, s) in cases {
            assert_eq!(stem(w), s, "{w}");
        }
    }
}
