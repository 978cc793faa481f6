//! String helpers with Python's semantics, so that tokenization splits exactly where the
//! reference tools (written in Python) split.

/// Python's `str.isspace()` for one character: Rust's `char::is_whitespace` plus the four
/// ASCII separators U+001C..U+001F, which Python also treats as whitespace.
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no arguments: runs of whitespace separate, no empty pieces.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// Python's `str.rstrip()` with no arguments.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Python's `str.strip()` with no arguments.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.lower()`: full Unicode lowercase mapping (ASCII fast path).
pub fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Number of Unicode code points, what Python's `len()` returns for a `str`.
#[inline]
pub fn py_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_python() {
        let s = "a\u{1c}b\u{a0}c  d\u{3000}e\u{200b}f";
        let parts: Vec<&str> = py_split(s).collect();
        // U+200B (zero width space) is not whitespace in Python.
        assert_eq!(parts, vec!["a", "b", "c", "d", "e\u{200b}f"]);
        assert_eq!(py_split("   ").count(), 0);
    }

    #[test]
    fn strip_and_lower() {
        assert_eq!(py_rstrip(" x \u{1f}\n"), " x");
        assert_eq!(py_strip("\u{85} x \u{2028}"), "x");
        assert_eq!(py_lower("ÀB"), "àb");
        assert_eq!(py_len("añb"), 3);
    }
}
