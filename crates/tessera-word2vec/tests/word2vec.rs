//! word2vec end to end on the Shakespeare corpus (`data/shakespeare.txt.gz`, 884,513
//! words in the vocabulary of 9,126 words at min count 5): word2vec's default settings, 2 threads.
//!
//! The neighbour pairs were chosen from runs with seeds 0, 1, 2 (2 threads) and 0 (1 thread) of
//! this trainer and one of gensim 4.4 with the same settings: in all of them each expected word
//! ranked at most 5th among the nearest of its partner: the test asks for the top 10. For
//! man : king :: woman : ?, `queen` ranked 2nd in 5 of 7 runs of this trainer, 3rd and 9th in
//! the others, 2nd and 5th in 2 gensim runs: the test asks for the top 20. (king → queen itself
//! is not robust on this corpus: it ranked 31st–94th here and 36th in gensim, behind the kings
//! and dukes of the histories.)

use std::io::Read;
use tessera_word2vec::{train, Corpus, Event, Options, WordVectors};

const K: usize = 10;
/// How many answers of the analogy are searched for `queen`.
const K_ANALOGY: usize = 20;

/// The corpus, vendored gzip-compressed (see `fixtures/README.md`).
fn shakespeare() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/shakespeare.txt.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn neighbours(v: &WordVectors, word: &str) -> Vec<String> {
    v.similar(word, K)
        .unwrap()
        .into_iter()
        .map(|n| n.word)
        .collect()
}

#[test]
fn shakespeare_neighbours_and_falling_loss() {
    let corpus = Corpus::from_texts(&[&shakespeare()], 5).unwrap();
    assert_eq!(corpus.vocab.len(), 9126);
    assert_eq!(corpus.ids.len(), 884_513);
    let opts = Options {
        threads: 2,
        ..Options::default()
    };
    let mut progress = 0;
    let (vectors, reports) = train(&corpus, &opts, None, &mut |e| {
        if let Event::Progress { .. } = e {
            progress += 1;
        }
    })
    .unwrap();
    for r in &reports {
        eprintln!(
            "epoch {}: loss {:.4} (fixed sample), {:.4} while training; {:.0} words/s",
            r.epoch, r.probe_loss, r.loss, r.words_per_s
        );
    }
    // The loss on the fixed sample falls every epoch; the running loss ends below its start.
    assert!(
        reports
            .windows(2)
            .all(|w| w[1].probe_loss < w[0].probe_loss),
        "{reports:?}"
    );
    assert!(reports[4].loss < reports[0].loss, "{reports:?}");
    // Before training the loss is 6 ln 2 ≈ 4.16 (output vectors start at zero).
    assert!(reports[4].probe_loss < 2.6, "{reports:?}");
    assert!(progress > 0, "no progress events");

    // Through the text format, as `tessera word2vec similar` reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors.txt");
    vectors.save(&path).unwrap();
    let v = WordVectors::load(&path).unwrap();
    assert_eq!((v.len(), v.dim()), (9126, 100));

    for (word, expected) in [
        ("man", "woman"),
        ("father", "mother"),
        ("husband", "wife"),
        ("day", "night"),
        ("he", "she"),
    ] {
        let near = neighbours(&v, word);
        eprintln!("{word}: {near:?}");
        assert!(
            near.iter().any(|w| w == expected),
            "{expected} not among the {K} nearest of {word}: {near:?}"
        );
    }
    let a: Vec<String> = v
        .analogy("man", "king", "woman", K_ANALOGY)
        .unwrap()
        .into_iter()
        .map(|n| n.word)
        .collect();
    eprintln!("man : king :: woman : {a:?}");
    assert!(a.iter().any(|w| w == "queen"), "{a:?}");
}
