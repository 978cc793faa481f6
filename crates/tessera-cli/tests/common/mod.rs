//! Data the CLI tests share (each test binary uses what it needs).
#![allow(dead_code)]

/// A tiny BERT config for training an encoder from scratch.
pub const TINY_BERT: &str = r#"{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}"#;

/// 100 English→Spanish colour pairs in four "books" (the dev split is by book): a TSV with a
/// `ref en es` header, as `tessera train --task translation` reads.
pub fn colour_pairs_tsv() -> String {
    let words = [
        ("red", "rojo"),
        ("blue", "azul"),
        ("green", "verde"),
        ("black", "negro"),
    ];
    let mut tsv = String::from("ref\ten\tes\n");
    for (b, book) in ["Gen", "Exod", "Lev", "Num"].iter().enumerate() {
        for v in 0..25 {
            let (a, x) = words[(b + v) % 4];
            let (c, y) = words[(b + 2 * v + 1) % 4];
            tsv.push_str(&format!("{book}.1.{v}\t{a} and {c}\t{x} y {y}\n"));
        }
    }
    tsv
}
