//! Constrained decoding to JSON: a character-level JSON recognizer and a token mask built from
//! it. At each step every token whose text would leave valid JSON (a prefix of some JSON object)
//! is masked out before sampling, the end-of-sequence token is allowed only once the object is
//! complete, and when the token budget runs out the shortest closing text is appended, so the
//! output always parses.

/// Deepest nesting the recognizer tracks (deeper structures are refused).
const MAX_DEPTH: usize = 32;
/// Longest run of whitespace allowed between tokens (keeps a model from padding forever).
const MAX_SPACE_RUN: u8 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Before the top-level value.
    Start,
    /// A value is expected (after `:`, or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayStart,
    /// After `{` (a key or `}`), or after `,` in an object (a key).
    KeyOrEnd,
    Key,
    /// After a key: `:`.
    Colon,
    /// Inside a string; `key` says whether it is an object key.
    Str {
        key: bool,
    },
    /// After a backslash in a string.
    Escape {
        key: bool,
    },
    /// After `\u`, with this many hex digits still to read.
    Unicode {
        key: bool,
        left: u8,
    },
    /// Inside a number: which part.
    Num(NumPart),
    /// Inside `true` / `false` / `null`: the literal and how much of it is read.
    Lit {
        which: u8,
        at: u8,
    },
    /// After a complete value: `,` or the closing bracket (or the end at the top level).
    After,
    /// The top-level object is complete.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumPart {
    /// After `-`.
    Sign,
    /// After a leading `0`.
    Zero,
    /// Integer digits.
    Int,
    /// After `.`.
    Dot,
    Frac,
    /// After `e`/`E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    ExpDigits,
}

const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// The state of a JSON object being written, character by character (`Copy`: trying a token
/// is a copy and a few steps).
#[derive(Clone, Copy, Debug)]
pub struct JsonState {
    mode: Mode,
    /// Open containers: `b'{'` or `b'['`.
    stack: [u8; MAX_DEPTH],
    depth: usize,
    spaces: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonState {
    /// Expecting a JSON object.
    pub fn new() -> Self {
        JsonState {
            mode: Mode::Start,
            stack: [0; MAX_DEPTH],
            depth: 0,
            spaces: 0,
        }
    }

    /// The object is complete (only whitespace may follow).
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    fn top(&self) -> u8 {
        if self.depth == 0 {
            0
        } else {
            self.stack[self.depth - 1]
        }
    }

    fn push(&mut self, c: u8) -> bool {
        if self.depth == MAX_DEPTH {
            return false;
        }
        self.stack[self.depth] = c;
        self.depth += 1;
        true
    }

    /// After a value ends: the enclosing container decides what may follow.
    fn value_done(&mut self) {
        self.mode = if self.depth == 0 {
            Mode::Done
        } else {
            Mode::After
        };
    }

    fn space(&mut self, c: char) -> Option<bool> {
        if matches!(c, ' ' | '\n' | '\t' | '\r') {
            self.spaces += 1;
            return Some(self.spaces <= MAX_SPACE_RUN);
        }
        self.spaces = 0;
        None
    }

    /// Start a value with `c`.
    fn begin_value(&mut self, c: char) -> bool {
        match c {
            '{' => {
                self.mode = Mode::KeyOrEnd;
                self.push(b'{')
            }
            '[' => {
                self.mode = Mode::ArrayStart;
                self.push(b'[')
            }
            '"' => {
                self.mode = Mode::Str { key: false };
                true
            }
            '-' => {
                self.mode = Mode::Num(NumPart::Sign);
                true
            }
            '0' => {
                self.mode = Mode::Num(NumPart::Zero);
                true
            }
            '1'..='9' => {
                self.mode = Mode::Num(NumPart::Int);
                true
            }
            't' | 'f' | 'n' => {
                let which = match c {
                    't' => 0,
                    'f' => 1,
                    _ => 2,
                };
                self.mode = Mode::Lit { which, at: 1 };
                true
            }
            _ => false,
        }
    }

    fn close(&mut self, c: char) -> bool {
        let want = if c == '}' { b'{' } else { b'[' };
        if self.top() != want {
            return false;
        }
        self.depth -= 1;
        self.value_done();
        true
    }

    /// Feed one character; false if it cannot continue valid JSON.
    pub fn feed(&mut self, c: char) -> bool {
        match self.mode {
            Mode::Start => match self.space(c) {
                Some(ok) => ok,
                None => c == '{' && self.begin_value(c),
            },
            Mode::Value => match self.space(c) {
                Some(ok) => ok,
                None => self.begin_value(c),
            },
            Mode::ArrayStart => match self.space(c) {
                Some(ok) => ok,
                None if c == ']' => self.close(c),
                None => self.begin_value(c),
            },
            Mode::KeyOrEnd | Mode::Key => match self.space(c) {
                Some(ok) => ok,
                None if c == '"' => {
                    self.mode = Mode::Str { key: true };
                    true
                }
                None => self.mode == Mode::KeyOrEnd && c == '}' && self.close(c),
            },
            Mode::Colon => match self.space(c) {
                Some(ok) => ok,
                None if c == ':' => {
                    self.mode = Mode::Value;
                    true
                }
                None => false,
            },
            Mode::Str { key } => match c {
                '"' => {
                    if key {
                        self.mode = Mode::Colon;
                    } else {
                        self.value_done();
                    }
                    true
                }
                '\\' => {
                    self.mode = Mode::Escape { key };
                    true
                }
                c if (c as u32) < 0x20 => false,
                _ => true,
            },
            Mode::Escape { key } => {
                self.mode = match c {
                    '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => Mode::Str { key },
                    'u' => Mode::Unicode { key, left: 4 },
                    _ => return false,
                };
                true
            }
            Mode::Unicode { key, left } => {
                if !c.is_ascii_hexdigit() {
                    return false;
                }
                self.mode = if left == 1 {
                    Mode::Str { key }
                } else {
                    Mode::Unicode {
                        key,
                        left: left - 1,
                    }
                };
                true
            }
            Mode::Num(part) => {
                use NumPart::*;
                let next = match (part, c) {
                    (Sign, '0') => Some(Zero),
                    (Sign, '1'..='9') => Some(Int),
                    (Int, '0'..='9') => Some(Int),
                    (Zero | Int, '.') => Some(Dot),
                    (Dot | Frac, '0'..='9') => Some(Frac),
                    (Zero | Int | Frac, 'e' | 'E') => Some(Exp),
                    (Exp, '+' | '-') => Some(ExpSign),
                    (Exp | ExpSign | ExpDigits, '0'..='9') => Some(ExpDigits),
                    _ => None,
                };
                match next {
                    Some(p) => {
                        self.mode = Mode::Num(p);
                        true
                    }
                    // The number ends here if it can; the character then follows the value.
                    None if matches!(part, Zero | Int | Frac | ExpDigits) => {
                        self.value_done();
                        if self.mode == Mode::Done {
                            return false; // a number cannot be the top-level object
                        }
                        self.feed(c)
                    }
                    None => false,
                }
            }
            Mode::Lit { which, at } => {
                let lit = LITERALS[which as usize];
                if lit.get(at as usize) != Some(&(c as u8)) || !c.is_ascii() {
                    return false;
                }
                if at as usize + 1 == lit.len() {
                    self.value_done();
                } else {
                    self.mode = Mode::Lit { which, at: at + 1 };
                }
                true
            }
            Mode::After => match self.space(c) {
                Some(ok) => ok,
                None => match c {
                    ',' => {
                        self.mode = if self.top() == b'{' {
                            Mode::Key
                        } else {
                            Mode::Value
                        };
                        true
                    }
                    '}' | ']' => self.close(c),
                    _ => false,
                },
            },
            Mode::Done => self.space(c).unwrap_or(false),
        }
    }

    /// Whether `text` can follow (the state is not changed).
    pub fn accepts(&self, text: &str) -> bool {
        let mut s = *self;
        !text.is_empty() && text.chars().all(|c| s.feed(c))
    }

    /// Feed `text`; false (and the state undefined) if it is not valid here.
    pub fn feed_str(&mut self, text: &str) -> bool {
        text.chars().all(|c| self.feed(c))
    }

    /// The shortest text that completes the object from here.
    pub fn closing_text(&self) -> String {
        let mut out = String::new();
        let mut s = *self;
        match s.mode {
            Mode::Start => return "{}".into(),
            Mode::Str { key } | Mode::Escape { key } | Mode::Unicode { key, .. } => {
                if let Mode::Escape { .. } = s.mode {
                    out.push('n');
                }
                if let Mode::Unicode { left, .. } = s.mode {
                    out.extend(std::iter::repeat_n('0', left as usize));
                }
                out.push('"');
                if key {
                    out.push_str(":null");
                }
            }
            Mode::Num(NumPart::Sign | NumPart::Dot | NumPart::Exp | NumPart::ExpSign) => {
                out.push('0')
            }
            Mode::Lit { which, at } => out.push_str(
                std::str::from_utf8(&LITERALS[which as usize][at as usize..]).unwrap_or(""),
            ),
            Mode::Colon => out.push_str(":null"),
            // A value is due (after `:`, `[` or `,`): `null` fits every case.
            Mode::Value => out.push_str("null"),
            Mode::Key => {
                // After `,` in an object: a key is due; give it one.
                out.push_str("\"\":null");
            }
            _ => {}
        }
        s.mode = Mode::After;
        while s.depth > 0 {
            s.depth -= 1;
            out.push(if s.stack[s.depth] == b'{' { '}' } else { ']' });
        }
        out
    }
}

/// The text of every token, decoded alone (None for tokens that are not whole characters or are
/// empty): what the mask checks against the recognizer.
pub fn token_texts(tok: &crate::tokenizer::Tokenizer) -> Vec<Option<String>> {
    (0..tok.vocab_size() as u32)
        .map(|id| match tok.decode(&[id]) {
            Ok(t) if !t.is_empty() && !t.contains('\u{FFFD}') => Some(t),
            _ => None,
        })
        .collect()
}

/// What a constrained choice must produce: any JSON object, or an instance of a schema.
#[derive(Clone, Debug)]
pub enum Constraint {
    Object(JsonState),
    Schema(
        std::sync::Arc<super::json_schema::Schema>,
        Box<super::json_schema::SchemaState>,
    ),
}

impl Constraint {
    /// Any JSON object.
    pub fn object() -> Self {
        Constraint::Object(JsonState::new())
    }

    /// An instance of `schema`.
    pub fn schema(schema: std::sync::Arc<super::json_schema::Schema>) -> Self {
        Constraint::Schema(schema, Box::default())
    }

    /// Whether `text` can follow.
    pub fn accepts(&self, text: &str) -> bool {
        match self {
            Constraint::Object(s) => s.accepts(text),
            Constraint::Schema(schema, s) => s.accepts(schema, text),
        }
    }

    /// Feed `text` (false if it does not fit).
    pub fn feed_str(&mut self, text: &str) -> bool {
        match self {
            Constraint::Object(s) => s.feed_str(text),
            Constraint::Schema(schema, s) => s.feed_str(schema, text),
        }
    }

    /// The output is complete.
    pub fn is_complete(&self) -> bool {
        match self {
            Constraint::Object(s) => s.is_complete(),
            Constraint::Schema(_, s) => s.is_complete(),
        }
    }

    /// The shortest text completing the output.
    pub fn closing_text(&self) -> String {
        match self {
            Constraint::Object(s) => s.closing_text(),
            Constraint::Schema(schema, s) => s.closing_text(schema),
        }
    }
}

/// Set the logits of tokens that cannot continue `state` to -inf; `eos` is allowed exactly when
/// the output is complete. Returns false if no token is allowed.
pub fn mask_logits(
    state: &Constraint,
    texts: &[Option<String>],
    eos: Option<u32>,
    logits: &mut [f32],
) -> bool {
    let mut any = false;
    for (id, l) in logits.iter_mut().enumerate() {
        let ok = if Some(id as u32) == eos {
            state.is_complete()
        } else {
            match texts.get(id).and_then(|t| t.as_deref()) {
                Some(t) => state.accepts(t),
                None => false,
            }
        };
        if ok {
            any = true;
        } else {
            *l = f32::NEG_INFINITY;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(s: &str) -> bool {
        let mut st = JsonState::new();
        st.feed_str(s) && st.is_complete()
    }

    #[test]
    fn recognizes_json_objects() {
        for s in [
            "{}",
            " { \"a\" : 1 } ",
            "{\"a\":[1,2.5,-3e+2,0,{\"b\":null}],\"c\":\"x\\\"y\\u00e9\",\"d\":true,\"e\":false}",
            "{\"a\":[]}",
            "{\"n\":-0.5E-3}",
        ] {
            assert!(valid(s), "{s}");
            assert!(serde_json::from_str::<serde_json::Value>(s).is_ok());
        }
        for s in [
            "[1]",
            "1",
            "\"x\"",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":tru}",
            "{\"a\":[1,]}",
            "{a:1}",
            "{\"a\":1}}",
            "{\"a\":\"\n\"}",
        ] {
            assert!(!valid(s), "{s}");
        }
    }

    #[test]
    fn every_prefix_closes_to_valid_json() {
        let s = "{\"key\": [1, -2.5e3, {\"x\": \"a\\u00e9b\"}, true, null], \"k2\": \"v\"}";
        let mut st = JsonState::new();
        for (i, c) in s.char_indices() {
            let text = format!("{}{}", &s[..i], st.closing_text());
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "prefix {:?} closed as {text:?}",
                &s[..i]
            );
            assert!(st.feed(c));
        }
        assert!(st.is_complete());
    }

    #[test]
    fn whitespace_runs_are_bounded() {
        let mut st = JsonState::new();
        assert!(st.feed_str("{\"a\":"));
        assert!(!st.accepts(&" ".repeat(20)));
        assert!(st.accepts("  1"));
    }
}
