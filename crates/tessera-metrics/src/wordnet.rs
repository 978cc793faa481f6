//! A reader of the WordNet 3.0 dictionary files (`index.*`, `data.*`, `*.exc`, as Princeton
//! distributes them and Debian's `wordnet-base` installs them) with NLTK 3.10's `synsets` and
//! `_morphy` lookups, which is what NLTK's METEOR uses for synonym matching.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{MetricsError, Result};
use crate::ngram::FxHashMap;
use crate::text::py_lower;

/// Where Debian's `wordnet-base` puts the dictionary.
pub const DEBIAN_WORDNET_DIR: &str = "/usr/share/wordnet";

/// Environment variable naming the dictionary folder.
pub const WORDNET_ENV: &str = "TESSERA_WORDNET";

/// Part of speech, in NLTK's `POS_LIST` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pos {
    /// noun (`n`)
    Noun = 0,
    /// verb (`v`)
    Verb = 1,
    /// adjective (`a`, satellites included)
    Adj = 2,
    /// adverb (`r`)
    Adv = 3,
}

/// The four parts of speech in NLTK's search order.
pub const POS_LIST: [Pos; 4] = [Pos::Noun, Pos::Verb, Pos::Adj, Pos::Adv];

impl Pos {
    fn suffix(self) -> &'static str {
        match self {
            Pos::Noun => "noun",
            Pos::Verb => "verb",
            Pos::Adj => "adj",
            Pos::Adv => "adv",
        }
    }
    fn from_tag(t: &str) -> Option<Self> {
        match t {
            "n" => Some(Pos::Noun),
            "v" => Some(Pos::Verb),
            "a" | "s" => Some(Pos::Adj),
            "r" => Some(Pos::Adv),
            _ => None,
        }
    }
    /// NLTK's `MORPHOLOGICAL_SUBSTITUTIONS`.
    fn substitutions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Pos::Noun => &[
                ("s", ""),
                ("ses", "s"),
                ("ves", "f"),
                ("xes", "x"),
                ("zes", "z"),
                ("ches", "ch"),
                ("shes", "sh"),
                ("men", "man"),
                ("ies", "y"),
            ],
            Pos::Verb => &[
                ("s", ""),
                ("ies", "y"),
                ("es", "e"),
                ("es", ""),
                ("ed", "e"),
                ("ed", ""),
                ("ing", "e"),
                ("ing", ""),
            ],
            Pos::Adj => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
            Pos::Adv => &[],
        }
    }
}

/// The WordNet database, loaded from a dictionary folder.
pub struct WordNet {
    dir: PathBuf,
    /// lemma -> synset offsets per part of speech (index files).
    index: FxHashMap<String, [Vec<u32>; 4]>,
    /// inflected form -> base forms, per part of speech (exception files).
    exceptions: [FxHashMap<String, Vec<String>>; 4],
    /// the data files, whole.
    data: [Vec<u8>; 4],
    cache: Mutex<FxHashMap<String, std::sync::Arc<BTreeSet<String>>>>,
}

impl std::fmt::Debug for WordNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WordNet({}, {} lemmas)",
            self.dir.display(),
            self.index.len()
        )
    }
}

fn missing(dir: &Path, file: &str, e: &std::io::Error) -> MetricsError {
    MetricsError::WordNet(format!(
        "cannot read {} ({e}). WordNet 3.0 is needed for METEOR: install the Debian package \
         `wordnet-base` (apt-get install wordnet-base, files in {DEBIAN_WORDNET_DIR}), or point \
         {WORDNET_ENV} (or --wordnet) at a folder with index.noun, data.noun, noun.exc, …",
        dir.join(file).display()
    ))
}

impl WordNet {
    /// The folder to use: `$TESSERA_WORDNET` if set, else Debian's `/usr/share/wordnet`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os(WORDNET_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEBIAN_WORDNET_DIR))
    }

    /// Loads the dictionary from `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| missing(&dir, name, &e));
        let mut index: FxHashMap<String, [Vec<u32>; 4]> = FxHashMap::default();
        let mut data: [Vec<u8>; 4] = Default::default();
        let mut exceptions: [FxHashMap<String, Vec<String>>; 4] = Default::default();
        for pos in POS_LIST {
            let name = format!("index.{}", pos.suffix());
            let bytes = read(&name)?;
            let text = String::from_utf8_lossy(&bytes);
            for (ln, line) in text.lines().enumerate() {
                if line.starts_with(' ') || line.is_empty() {
                    continue;
                }
                let (lemma, offs) = parse_index_line(line).ok_or_else(|| {
                    MetricsError::WordNet(format!(
                        "{}:{}: malformed index line",
                        dir.join(&name).display(),
                        ln + 1
                    ))
                })?;
                index.entry(lemma.to_string()).or_default()[pos as usize] = offs;
            }
            let exc = format!("{}.exc", pos.suffix());
            let bytes = read(&exc)?;
            for line in String::from_utf8_lossy(&bytes).lines() {
                let mut it = line.split_whitespace();
                if let Some(k) = it.next() {
                    exceptions[pos as usize]
                        .insert(k.to_string(), it.map(str::to_string).collect());
                }
            }
            data[pos as usize] = read(&format!("data.{}", pos.suffix()))?;
        }
        Ok(Self {
            dir,
            index,
            exceptions,
            data,
            cache: Mutex::new(FxHashMap::default()),
        })
    }

    /// Loads from [`WordNet::default_dir`].
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_dir())
    }

    fn has(&self, form: &str, pos: Pos) -> bool {
        self.index
            .get(form)
            .is_some_and(|o| !o[pos as usize].is_empty())
    }

    /// NLTK 3.10's `_morphy(form, pos)`: base forms of `form` present in WordNet for `pos`.
    pub fn morphy(&self, form: &str, pos: Pos) -> Vec<String> {
        let mut forms: Vec<String> = vec![form.to_string()];
        if let Some(exc) = self.exceptions[pos as usize].get(form) {
            forms.extend(exc.iter().cloned());
        } else {
            for (old, new) in pos.substitutions() {
                if let Some(stem) = form.strip_suffix(old) {
                    forms.push(format!("{stem}{new}"));
                }
            }
        }
        let mut out: Vec<String> = Vec::new();
        for f in forms {
            if self.has(&f, pos) && !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// NLTK's `wordnet.synsets(lemma)`: `(pos, offset)` of every synset, in NLTK's order.
    pub fn synsets(&self, lemma: &str) -> Vec<(Pos, u32)> {
        let lemma = py_lower(lemma);
        let mut out = Vec::new();
        for pos in POS_LIST {
            for form in self.morphy(&lemma, pos) {
                if let Some(offs) = self.index.get(&form) {
                    out.extend(offs[pos as usize].iter().map(|&o| (pos, o)));
                }
            }
        }
        out
    }

    /// The lemma names of the synset at `offset` in the `pos` data file (syntactic markers
    /// such as `(a)` removed, case kept).
    pub fn lemma_names(&self, pos: Pos, offset: u32) -> Result<Vec<String>> {
        let bad = |msg: &str| {
            MetricsError::WordNet(format!("data.{} offset {offset}: {msg}", pos.suffix()))
        };
        let d = &self.data[pos as usize];
        let start = offset as usize;
        if start >= d.len() {
            return Err(bad("beyond end of file"));
        }
        let end = d[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(d.len(), |e| start + e);
        let line = std::str::from_utf8(&d[start..end]).map_err(|_| bad("not UTF-8"))?;
        let cols = line.split('|').next().unwrap_or("");
        let mut it = cols.split_whitespace();
        let off: u32 = it
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("no offset"))?;
        if off != offset {
            return Err(bad("offset does not start a synset line"));
        }
        it.next(); // lexicographer file
        let tag = it.next().ok_or_else(|| bad("no part of speech"))?;
        Pos::from_tag(tag).ok_or_else(|| bad("unknown part of speech"))?;
        let n = it
            .next()
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .ok_or_else(|| bad("no word count"))?;
        let mut names = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let w = it.next().ok_or_else(|| bad("truncated word list"))?;
            it.next(); // lex_id
            names.push(strip_marker(w).to_string());
        }
        Ok(names)
    }

    /// What NLTK's METEOR collects for a hypothesis word: the names (without `_`) of all
    /// lemmas of all synsets of `word` (cached).
    pub fn synonyms(&self, word: &str) -> Result<std::sync::Arc<BTreeSet<String>>> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(word).cloned()) {
            return Ok(s);
        }
        let mut set = BTreeSet::new();
        for (pos, off) in self.synsets(word) {
            for name in self.lemma_names(pos, off)? {
                if !name.contains('_') {
                    set.insert(name);
                }
            }
        }
        let set = std::sync::Arc::new(set);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(word.to_string(), set.clone());
        }
        Ok(set)
    }
}

fn parse_index_line(line: &str) -> Option<(&str, Vec<u32>)> {
    let mut it = line.split_whitespace();
    let lemma = it.next()?;
    it.next()?; // pos
    let n_synsets: usize = it.next()?.parse().ok()?;
    let n_pointers: usize = it.next()?.parse().ok()?;
    for _ in 0..n_pointers {
        it.next()?;
    }
    it.next()?; // n_senses
    it.next()?; // tagsense count
    let offs: Option<Vec<u32>> = (0..n_synsets).map(|_| it.next()?.parse().ok()).collect();
    Some((lemma, offs?))
}

/// Removes a trailing syntactic marker like `(a)`, `(p)`, `(ip)` (NLTK's `(.*?)(\([^()]*\))?$`).
fn strip_marker(w: &str) -> &str {
    if w.ends_with(')') {
        if let Some(i) = w.rfind('(') {
            if !w[i + 1..w.len() - 1].contains([')', '(']) {
                return &w[..i];
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(strip_marker("galore(ip)"), "galore");
        assert_eq!(strip_marker("outback(a)"), "outback");
        assert_eq!(strip_marker("plain"), "plain");
    }

    #[test]
    fn missing_dir_is_clear() {
        let e = WordNet::open("/nonexistent/wordnet")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wordnet-base") && e.contains(WORDNET_ENV), "{e}");
    }
}
