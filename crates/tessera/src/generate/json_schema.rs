//! Constrained decoding to a JSON schema (the subset OpenAI's structured outputs use): objects
//! with `properties` (written in the declared order, every property present), arrays with
//! `items` (and `minItems`/`maxItems`), strings (optionally an `enum`), numbers, integers,
//! booleans, null, `enum`/`const` of any JSON values, and nullable types (`"type": ["x", "null"]`).
//! A character-level recognizer walks the schema; [`SchemaState::closing_text`] completes any
//! prefix with the shortest text that makes it a valid instance.

use crate::{Error, Result};
use serde_json::Value;

/// Deepest nesting tracked.
const MAX_DEPTH: usize = 16;
/// Longest whitespace run allowed between tokens.
const MAX_SPACE_RUN: u8 = 4;
/// Most alternatives of one `enum`.
const MAX_ENUM: usize = 64;

#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// Properties as the text that introduces each (`"name":`) and the value's node.
    Object {
        props: Vec<(String, usize)>,
    },
    Array {
        items: usize,
        min: usize,
        max: usize,
    },
    Str,
    Number {
        integer: bool,
    },
    /// Literal alternatives: the JSON texts of `enum`/`const` values, `true`/`false`, `null`.
    Lits(Vec<String>),
    /// One of several nodes chosen by the first character (`["string", "null"]`, ...).
    Either(Vec<usize>),
}

/// Bits of `n` properties (at most 64).
fn all_props(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// A compiled schema.
#[derive(Clone, Debug)]
pub struct Schema {
    nodes: Vec<Node>,
}

impl Schema {
    /// Compile a JSON schema (errors name what is not supported).
    pub fn compile(v: &Value) -> Result<Self> {
        let mut s = Schema { nodes: Vec::new() };
        s.node(v, 0)?;
        if !matches!(s.nodes[0], Node::Object { .. }) {
            return Err(Error::Input(
                "the schema's top level must be an object".into(),
            ));
        }
        Ok(s)
    }

    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn node(&mut self, v: &Value, depth: usize) -> Result<usize> {
        let bad = |m: String| Err(Error::Input(format!("json_schema: {m}")));
        if depth > MAX_DEPTH {
            return bad("nested too deeply".into());
        }
        let Some(o) = v.as_object() else {
            return bad(format!("a schema must be an object, got {v}"));
        };
        for k in [
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "not",
            "if",
            "pattern",
            "patternProperties",
        ] {
            if o.contains_key(k) {
                return bad(format!("'{k}' is not supported"));
            }
        }
        if let Some(c) = o.get("const") {
            return Ok(self.push(Node::Lits(vec![c.to_string()])));
        }
        if let Some(e) = o.get("enum") {
            let Some(vals) = e
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= MAX_ENUM)
            else {
                return bad(format!("'enum' must list 1 to {MAX_ENUM} values"));
            };
            return Ok(self.push(Node::Lits(vals.iter().map(Value::to_string).collect())));
        }
        let types: Vec<&str> = match o.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            None if o.contains_key("properties") => vec!["object"],
            _ => return bad(format!("every schema needs a 'type' (in {v})")),
        };
        if types.len() > 1 {
            let mut alts = Vec::new();
            for t in types {
                let mut one = o.clone();
                one.insert("type".into(), Value::from(t));
                alts.push(self.node(&Value::Object(one), depth + 1)?);
            }
            return Ok(self.push(Node::Either(alts)));
        }
        Ok(match types.first().copied() {
            Some("object") => {
                let id = self.push(Node::Object { props: Vec::new() });
                let mut props = Vec::new();
                if let Some(p) = o.get("properties").and_then(Value::as_object) {
                    for (k, sub) in p {
                        if k.contains(['"', '\\']) || k.chars().any(char::is_control) {
                            return bad(format!("property name {k:?} needs escaping"));
                        }
                        props.push((format!("\"{k}\":"), self.node(sub, depth + 1)?));
                    }
                }
                if props.len() > 64 {
                    return bad(format!("{} properties (at most 64)", props.len()));
                }
                self.nodes[id] = Node::Object { props };
                id
            }
            Some("array") => {
                let id = self.push(Node::Array {
                    items: 0,
                    min: 0,
                    max: usize::MAX,
                });
                let items = match o.get("items") {
                    Some(s) => self.node(s, depth + 1)?,
                    None => return bad("an array needs 'items'".into()),
                };
                let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
                let max = o
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .map_or(usize::MAX, |m| m as usize);
                if min > max || min > 64 {
                    return bad(format!("minItems {min} / maxItems {max}"));
                }
                self.nodes[id] = Node::Array { items, min, max };
                id
            }
            Some("string") => self.push(Node::Str),
            Some("number") => self.push(Node::Number { integer: false }),
            Some("integer") => self.push(Node::Number { integer: true }),
            Some("boolean") => self.push(Node::Lits(vec!["true".into(), "false".into()])),
            Some("null") => self.push(Node::Lits(vec!["null".into()])),
            Some(other) => return bad(format!("type '{other}' is not supported")),
            None => return bad("empty 'type'".into()),
        })
    }

    /// The shortest valid instance of node `n`.
    fn minimal(&self, n: usize, out: &mut String) {
        match &self.nodes[n] {
            Node::Object { props } => {
                out.push('{');
                for (i, (k, sub)) in props.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    self.minimal(*sub, out);
                }
                out.push('}');
            }
            Node::Array { items, min, .. } => {
                out.push('[');
                for i in 0..*min {
                    if i > 0 {
                        out.push(',');
                    }
                    self.minimal(*items, out);
                }
                out.push(']');
            }
            Node::Str => out.push_str("\"\""),
            Node::Number { .. } => out.push('0'),
            Node::Lits(l) => out.push_str(&l[0]),
            Node::Either(alts) => self.minimal(alts[0], out),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the value of this frame's node (whitespace, then its first character).
    Start,
    /// Object: writing the `"key":` of one of the properties in `alive` (bit i: property i), `at`
    /// bytes in; `at == u16::MAX` while property `idx`'s value is being written.
    Key {
        at: u16,
        alive: u64,
    },
    /// Object/array: after a member, expecting `,` or the closing bracket.
    After,
    /// Array: after `[` (a value, or `]` if allowed).
    Open,
    /// String: inside; escape / unicode states.
    Str,
    Escape,
    Unicode {
        left: u8,
    },
    /// Number parts (as in the JSON grammar).
    Num {
        part: u8,
    },
    /// Literal alternatives still possible (bit i: alternative i), `at` characters in.
    Lit {
        alive: u64,
        at: u16,
    },
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    node: u16,
    /// Object: the property being written; array: members written.
    idx: u16,
    /// Object: the properties already written (bit i: property i).
    written: u64,
    phase: Phase,
}

/// Where a JSON instance of a [`Schema`] is, character by character.
#[derive(Clone, Copy, Debug)]
pub struct SchemaState {
    frames: [Frame; MAX_DEPTH + 2],
    depth: usize,
    spaces: u8,
    done: bool,
}

const NUM_SIGN: u8 = 0;
const NUM_ZERO: u8 = 1;
const NUM_INT: u8 = 2;
const NUM_DOT: u8 = 3;
const NUM_FRAC: u8 = 4;
const NUM_EXP: u8 = 5;
const NUM_EXP_SIGN: u8 = 6;
const NUM_EXP_DIGITS: u8 = 7;

impl SchemaState {
    /// At the start of an instance.
    pub fn new() -> Self {
        let f = Frame {
            node: 0,
            idx: 0,
            written: 0,
            phase: Phase::Start,
        };
        SchemaState {
            frames: [f; MAX_DEPTH + 2],
            depth: 1,
            spaces: 0,
            done: false,
        }
    }

    /// The instance is complete.
    pub fn is_complete(&self) -> bool {
        self.done
    }

    fn top(&mut self) -> &mut Frame {
        &mut self.frames[self.depth - 1]
    }

    fn space(&mut self, c: char) -> Option<bool> {
        if matches!(c, ' ' | '\n' | '\t' | '\r') {
            self.spaces += 1;
            return Some(self.spaces <= MAX_SPACE_RUN);
        }
        self.spaces = 0;
        None
    }

    /// The current frame's value is complete: pop it and advance its parent.
    fn value_done(&mut self, s: &Schema) {
        self.depth -= 1;
        if self.depth == 0 {
            self.done = true;
            return;
        }
        let f = self.top();
        f.phase = Phase::After;
        if let Node::Array { .. } = s.nodes[f.node as usize] {
            f.idx += 1;
        }
    }

    fn open(&mut self, node: usize) -> bool {
        if self.depth == self.frames.len() {
            return false;
        }
        self.frames[self.depth] = Frame {
            node: node as u16,
            idx: 0,
            written: 0,
            phase: Phase::Start,
        };
        self.depth += 1;
        true
    }

    /// Feed one character; false if no valid instance continues with it.
    pub fn feed(&mut self, s: &Schema, c: char) -> bool {
        if self.done {
            return self.space(c).unwrap_or(false);
        }
        let f = *self.top();
        let node = &s.nodes[f.node as usize];
        match (f.phase, node) {
            (Phase::Start, _) => {
                if let Some(ok) = self.space(c) {
                    return ok;
                }
                self.begin(s, f.node as usize, c)
            }
            (Phase::Key { at, alive }, Node::Object { props }) => {
                let at = at as usize;
                if at == 0 && matches!(c, ' ' | '\n' | '\t' | '\r') {
                    return self.space(c).unwrap_or(false);
                }
                let mut still = 0u64;
                let mut done_key = None;
                for (i, (text, _)) in props.iter().enumerate() {
                    if alive & (1 << i) != 0 && text[at..].starts_with(c) {
                        still |= 1 << i;
                        if at + c.len_utf8() == text.len() {
                            done_key = Some(i);
                        }
                    }
                }
                if still == 0 {
                    return false;
                }
                match done_key {
                    Some(i) => {
                        let t = self.top();
                        t.idx = i as u16;
                        t.written |= 1 << i;
                        // The value is open above this frame; its end sets `After`.
                        t.phase = Phase::Key {
                            at: u16::MAX,
                            alive: 0,
                        };
                        self.open(props[i].1)
                    }
                    None => {
                        self.top().phase = Phase::Key {
                            at: (at + c.len_utf8()) as u16,
                            alive: still,
                        };
                        true
                    }
                }
            }
            (Phase::After, Node::Object { props }) => {
                if let Some(ok) = self.space(c) {
                    return ok;
                }
                let all = all_props(props.len());
                if f.written != all {
                    if c != ',' {
                        return false;
                    }
                    self.top().phase = Phase::Key {
                        at: 0,
                        alive: all & !f.written,
                    };
                    true
                } else if c == '}' {
                    self.value_done(s);
                    true
                } else {
                    false
                }
            }
            (Phase::Open, Node::Array { items, min, .. }) => {
                if let Some(ok) = self.space(c) {
                    return ok;
                }
                if c == ']' {
                    if *min == 0 {
                        self.value_done(s);
                        return true;
                    }
                    return false;
                }
                let items = *items;
                self.top().phase = Phase::After;
                self.open(items) && self.feed(s, c)
            }
            (Phase::After, Node::Array { items, min, max }) => {
                if let Some(ok) = self.space(c) {
                    return ok;
                }
                let n = f.idx as usize;
                match c {
                    ',' if n < *max => {
                        let items = *items;
                        self.open(items)
                    }
                    ']' if n >= *min => {
                        self.value_done(s);
                        true
                    }
                    _ => false,
                }
            }
            (Phase::Str, _) => match c {
                '"' => {
                    self.value_done(s);
                    true
                }
                '\\' => {
                    self.top().phase = Phase::Escape;
                    true
                }
                c if (c as u32) < 0x20 => false,
                _ => true,
            },
            (Phase::Escape, _) => {
                self.top().phase = match c {
                    '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => Phase::Str,
                    'u' => Phase::Unicode { left: 4 },
                    _ => return false,
                };
                true
            }
            (Phase::Unicode { left }, _) => {
                if !c.is_ascii_hexdigit() {
                    return false;
                }
                self.top().phase = if left == 1 {
                    Phase::Str
                } else {
                    Phase::Unicode { left: left - 1 }
                };
                true
            }
            (Phase::Num { part }, Node::Number { integer }) => {
                let integer = *integer;
                let next = match (part, c) {
                    (NUM_SIGN, '0') => Some(NUM_ZERO),
                    (NUM_SIGN, '1'..='9') => Some(NUM_INT),
                    (NUM_INT, '0'..='9') => Some(NUM_INT),
                    (NUM_ZERO | NUM_INT, '.') if !integer => Some(NUM_DOT),
                    (NUM_DOT | NUM_FRAC, '0'..='9') => Some(NUM_FRAC),
                    (NUM_ZERO | NUM_INT | NUM_FRAC, 'e' | 'E') if !integer => Some(NUM_EXP),
                    (NUM_EXP, '+' | '-') => Some(NUM_EXP_SIGN),
                    (NUM_EXP | NUM_EXP_SIGN | NUM_EXP_DIGITS, '0'..='9') => Some(NUM_EXP_DIGITS),
                    _ => None,
                };
                match next {
                    Some(p) => {
                        self.top().phase = Phase::Num { part: p };
                        true
                    }
                    None if matches!(part, NUM_ZERO | NUM_INT | NUM_FRAC | NUM_EXP_DIGITS) => {
                        self.value_done(s);
                        !self.done && self.feed(s, c)
                    }
                    None => false,
                }
            }
            (Phase::Lit { alive, at }, Node::Lits(alts)) => {
                let at = at as usize;
                let mut still = 0u64;
                let mut finished = false;
                for (i, a) in alts.iter().enumerate() {
                    if alive & (1 << i) == 0 {
                        continue;
                    }
                    if a.len() == at {
                        finished = true; // complete; `c` may follow the value
                    } else if a[at..].starts_with(c) {
                        still |= 1 << i;
                    }
                }
                if still != 0 {
                    self.top().phase = Phase::Lit {
                        alive: still,
                        at: (at + c.len_utf8()) as u16,
                    };
                    // A literal that is now complete and extends no other ends here.
                    let complete = alts
                        .iter()
                        .enumerate()
                        .any(|(i, a)| still & (1 << i) != 0 && a.len() == at + c.len_utf8());
                    let longer = alts
                        .iter()
                        .enumerate()
                        .any(|(i, a)| still & (1 << i) != 0 && a.len() > at + c.len_utf8());
                    if complete && !longer {
                        self.value_done(s);
                    }
                    true
                } else if finished {
                    self.value_done(s);
                    !self.done && self.feed(s, c)
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    /// The first character `c` of a value of `node`.
    fn begin(&mut self, s: &Schema, node: usize, c: char) -> bool {
        let phase = match &s.nodes[node] {
            Node::Object { props } => {
                if c != '{' {
                    return false;
                }
                if props.is_empty() {
                    // `}` at once.
                    self.top().phase = Phase::After;
                    return true;
                }
                Phase::Key {
                    at: 0,
                    alive: all_props(props.len()),
                }
            }
            Node::Array { .. } => {
                if c != '[' {
                    return false;
                }
                Phase::Open
            }
            Node::Str => {
                if c != '"' {
                    return false;
                }
                Phase::Str
            }
            Node::Number { .. } => match c {
                '-' => Phase::Num { part: NUM_SIGN },
                '0' => Phase::Num { part: NUM_ZERO },
                '1'..='9' => Phase::Num { part: NUM_INT },
                _ => return false,
            },
            Node::Lits(alts) => {
                let alive = alts
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.starts_with(c))
                    .fold(0u64, |m, (i, _)| m | 1 << i);
                if alive == 0 {
                    return false;
                }
                self.top().phase = Phase::Lit {
                    alive: u64::MAX,
                    at: 0,
                };
                return self.feed(s, c);
            }
            Node::Either(alts) => {
                // The first alternative this character can start.
                for &a in alts {
                    let mut trial = *self;
                    trial.top().node = a as u16;
                    if trial.begin(s, a, c) {
                        *self = trial;
                        return true;
                    }
                }
                return false;
            }
        };
        self.top().phase = phase;
        true
    }

    /// Whether `text` can follow (the state is not changed).
    pub fn accepts(&self, s: &Schema, text: &str) -> bool {
        let mut st = *self;
        !text.is_empty() && text.chars().all(|c| st.feed(s, c))
    }

    /// Feed `text`; false if it is not valid here (the state is then undefined).
    pub fn feed_str(&mut self, s: &Schema, text: &str) -> bool {
        text.chars().all(|c| self.feed(s, c))
    }

    /// The shortest text completing a valid instance from here.
    pub fn closing_text(&self, s: &Schema) -> String {
        let mut out = String::new();
        let mut st = *self;
        while !st.done && st.depth > 0 {
            let f = *st.top();
            let node = &s.nodes[f.node as usize];
            match (f.phase, node) {
                (Phase::Start, _) => {
                    s.minimal(f.node as usize, &mut out);
                    st.value_done(s);
                }
                (Phase::Key { at, alive }, Node::Object { props }) if at != u16::MAX => {
                    // Finish the first key still possible, with the shortest value.
                    let i = (0..props.len())
                        .find(|&i| alive & (1 << i) != 0)
                        .unwrap_or(0);
                    let (k, sub) = &props[i];
                    out.push_str(&k[at as usize..]);
                    s.minimal(*sub, &mut out);
                    let t = st.top();
                    t.written |= 1 << i;
                    t.phase = Phase::After;
                }
                (Phase::Key { .. } | Phase::After, Node::Object { props }) => {
                    for (i, (k, sub)) in props.iter().enumerate() {
                        if f.written & (1 << i) == 0 {
                            out.push(',');
                            out.push_str(k);
                            s.minimal(*sub, &mut out);
                        }
                    }
                    out.push('}');
                    st.value_done(s);
                }
                (Phase::Open, Node::Array { items, min, .. }) => {
                    for i in 0..*min {
                        if i > 0 {
                            out.push(',');
                        }
                        s.minimal(*items, &mut out);
                    }
                    out.push(']');
                    st.value_done(s);
                }
                (Phase::After, Node::Array { items, min, .. }) => {
                    for _ in f.idx as usize..*min {
                        out.push(',');
                        s.minimal(*items, &mut out);
                    }
                    out.push(']');
                    st.value_done(s);
                }
                (Phase::Str | Phase::Escape | Phase::Unicode { .. }, _) => {
                    match f.phase {
                        Phase::Escape => out.push('n'),
                        Phase::Unicode { left } => {
                            out.extend(std::iter::repeat_n('0', left as usize))
                        }
                        _ => {}
                    }
                    out.push('"');
                    st.value_done(s);
                }
                (Phase::Num { part }, _) => {
                    // A lone `-` becomes -1 (not -0, which some parsers read as a float).
                    match part {
                        NUM_SIGN => out.push('1'),
                        NUM_DOT | NUM_EXP | NUM_EXP_SIGN => out.push('0'),
                        _ => {}
                    }
                    st.value_done(s);
                }
                (Phase::Lit { alive, at }, Node::Lits(alts)) => {
                    let best = alts
                        .iter()
                        .enumerate()
                        .filter(|(i, a)| alive & (1 << i) != 0 && a.len() >= at as usize)
                        .min_by_key(|(_, a)| a.len())
                        .map(|(_, a)| a.as_str())
                        .unwrap_or("");
                    out.push_str(&best[at as usize..]);
                    st.value_done(s);
                }
                _ => break,
            }
        }
        out
    }
}

impl Default for SchemaState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A validator for the supported subset (every declared property required).
    fn valid(schema: &Value, v: &Value) -> bool {
        if let Some(c) = schema.get("const") {
            return c == v;
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            return e.contains(v);
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec!["object"],
        };
        types.iter().any(|t| match (*t, v) {
            ("object", Value::Object(o)) => {
                let props = schema["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                o.len() == props.len()
                    && props
                        .iter()
                        .all(|(k, sub)| o.get(k).is_some_and(|x| valid(sub, x)))
            }
            ("array", Value::Array(a)) => {
                let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
                let max = schema
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .map_or(usize::MAX, |m| m as usize);
                a.len() >= min && a.len() <= max && a.iter().all(|x| valid(&schema["items"], x))
            }
            ("string", Value::String(_)) | ("boolean", Value::Bool(_)) | ("null", Value::Null) => {
                true
            }
            ("number", Value::Number(_)) => true,
            ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
            _ => false,
        })
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "score": {"type": "number"},
            "color": {"enum": ["red", "green", 12]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
            "pet": {"type": ["string", "null"]},
            "ok": {"type": "boolean"},
            "inner": {"type": "object", "properties": {"x": {"const": 1}}}
        }})
    }

    fn run(s: &Schema, text: &str) -> Option<SchemaState> {
        let mut st = SchemaState::new();
        st.feed_str(s, text).then_some(st)
    }

    #[test]
    fn accepts_instances_and_rejects_others() {
        let sv = schema();
        let s = Schema::compile(&sv).unwrap();
        let good = [
            r#"{"name":"Tom","age":3,"score":-1.5e2,"color":"red","tags":["a"],"pet":null,"ok":true,"inner":{"x":1}}"#,
            r#"{ "name":"a\"b\u00e9","age":0,"score":0.25,"color":12,"tags":["x","y","z"],"pet":"cat","ok":false,"inner":{"x":1}}"#,
        ];
        for g in good {
            let st = run(&s, g).unwrap_or_else(|| panic!("refused {g}"));
            assert!(st.is_complete(), "{g}");
            assert!(valid(&sv, &serde_json::from_str(g).unwrap()), "{g}");
        }
        let bad = [
            r#"{"age":3}"#,
            r#"{"name":3"#,
            r#"{"name":"Tom","age":3.5"#,
            r#"{"name":"Tom","age":3,"score":1,"color":"blue""#,
            r#"{"name":"Tom","age":3,"score":1,"color":"red","tags":[]"#,
            r#"{"name":"Tom","age":3,"score":1,"color":"red","tags":["a","b","c","d"]"#,
            r#"{"name":"Tom","age":3,"score":1,"color":"red","tags":["a"],"pet":1"#,
            r#"{"name":"Tom","age":3,"score":1,"color":"red","tags":["a"],"pet":null,"ok":true,"inner":{"x":2"#,
        ];
        for b in bad {
            assert!(run(&s, b).is_none(), "accepted {b}");
        }
    }

    #[test]
    fn every_prefix_closes_to_a_valid_instance() {
        let sv = schema();
        let s = Schema::compile(&sv).unwrap();
        let g = r#"{"name":"Tom \u00e9","age":-30,"score":2.5e-3,"color":"green","tags":["a","b"],"pet":"dog","ok":false,"inner":{"x":1}}"#;
        let mut st = SchemaState::new();
        for (i, c) in g.char_indices() {
            let text = format!("{}{}", &g[..i], st.closing_text(&s));
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("prefix {:?} closed as {text:?}: {e}", &g[..i]));
            assert!(valid(&sv, &v), "prefix {:?} closed as {text:?}", &g[..i]);
            assert!(st.feed(&s, c), "refused {:?} at {i}", c);
        }
        assert!(st.is_complete());
    }

    #[test]
    fn unsupported_schemas_are_named() {
        for (v, needle) in [
            (json!({"type": "string"}), "top level"),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}}),
                "$ref",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array"}}}),
                "items",
            ),
            (
                json!({"type": "object", "properties": {"a": {"anyOf": []}}}),
                "anyOf",
            ),
        ] {
            let e = Schema::compile(&v).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
