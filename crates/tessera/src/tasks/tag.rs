//! Token classification (NER): words to word pieces with first-piece labelling, tags back to
//! words, and entities with character spans.

use super::classify::{Classifier, HeadKind};
use crate::{Error, Result};
use tessera_metrics::seqeval::get_entities;

/// Pieces of a sentence of words: ids (`[CLS]` … `[SEP]`, truncated) and, per word, the position
/// of its first piece (`None` when the word has no piece or was cut off).
pub fn encode_words(
    tok: &tokenizers::Tokenizer,
    words: &[String],
) -> Result<(Vec<u32>, Vec<Option<usize>>)> {
    let enc = tok
        .encode(words, true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut first = vec![None; words.len()];
    for (pos, w) in enc.get_word_ids().iter().enumerate() {
        if let Some(w) = w {
            let slot = first
                .get_mut(*w as usize)
                .ok_or_else(|| Error::Tokenizer("word index out of range".into()))?;
            if slot.is_none() {
                *slot = Some(pos);
            }
        }
    }
    Ok((enc.get_ids().to_vec(), first))
}

/// One named entity found in a text.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Entity {
    /// Entity type (`person`, `geo-loc`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity's text.
    pub text: String,
    /// Character offsets in the input, end exclusive.
    pub start: usize,
    pub end: usize,
}

/// Whitespace-separated words of `text` with their character spans.
pub fn split_words(text: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut n = 0;
    for (ci, ch) in text.chars().enumerate() {
        n = ci + 1;
        match (ch.is_whitespace(), start) {
            (false, None) => start = Some(ci),
            (true, Some(s)) => {
                out.push((text.chars().skip(s).take(ci - s).collect(), s, ci));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((text.chars().skip(s).take(n - s).collect(), s, n));
    }
    out
}

impl Classifier {
    /// BIO tags of each sentence of words (words without a piece get `O`).
    pub fn tag_words(
        &self,
        sentences: &[Vec<String>],
        batch_size: usize,
    ) -> Result<Vec<Vec<String>>> {
        if self.kind != HeadKind::Token {
            return Err(Error::Input(
                "this model classifies whole texts; it cannot tag tokens".into(),
            ));
        }
        let enc = sentences
            .iter()
            .map(|w| encode_words(&self.tokenizer, w))
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = enc.iter().map(|e| e.0.len()).collect();
        let mut out = vec![Vec::new(); sentences.len()];
        for bucket in super::length_buckets(&lens, batch_size) {
            let seqs: Vec<&[u32]> = bucket.iter().map(|&i| enc[i].0.as_slice()).collect();
            let packed = crate::models::encoder::Packed::new(&seqs, self.bert.device())?;
            let pred = self
                .logits_packed(&packed, None, None)?
                .argmax(1)?
                .to_vec1::<u32>()?; // (N,)
            for (b, &i) in bucket.iter().enumerate() {
                out[i] = enc[i]
                    .1
                    .iter()
                    .map(|p| match p {
                        Some(p) => self.labels[pred[packed.row(b, *p)] as usize].clone(),
                        None => "O".to_string(),
                    })
                    .collect();
            }
        }
        Ok(out)
    }

    /// Entities of each text (split into words at whitespace), with character spans.
    pub fn tag_texts(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<Entity>>> {
        let split: Vec<Vec<(String, usize, usize)>> =
            texts.iter().map(|t| split_words(t)).collect();
        let sentences: Vec<Vec<String>> = split
            .iter()
            .map(|s| s.iter().map(|w| w.0.clone()).collect())
            .collect();
        let nonempty: Vec<usize> = (0..texts.len())
            .filter(|&i| !sentences[i].is_empty())
            .collect();
        let tagged = self.tag_words(
            &nonempty
                .iter()
                .map(|&i| sentences[i].clone())
                .collect::<Vec<_>>(),
            batch_size,
        )?;
        let mut out = vec![Vec::new(); texts.len()];
        for (&i, tags) in nonempty.iter().zip(tagged) {
            let words = &split[i];
            out[i] = get_entities(&[tags])
                .into_iter()
                .filter(|e| e.end < words.len())
                .map(|e| {
                    let (start, end) = (words[e.start].1, words[e.end].2);
                    Entity {
                        kind: e.kind,
                        text: texts[i].chars().skip(start).take(end - start).collect(),
                        start,
                        end,
                    }
                })
                .collect();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_with_char_spans() {
        let w = split_words("  héllo  wörld x");
        assert_eq!(
            w,
            vec![
                ("héllo".into(), 2, 7),
                ("wörld".into(), 9, 14),
                ("x".into(), 15, 16)
            ]
        );
        assert!(split_words("   ").is_empty());
    }
}
