//! Any bytes given as a `tokenizer.json` give a tokenizer or an error, never a panic; a
//! tokenizer that loads encodes and decodes text without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tokenizer::from_bytes(data) else {
        return;
    };
    std::hint::black_box(t.vocab_size());
    for text in ["Hello wörld 123", "", "  <|im_start|>x\n\t日本"] {
        if let Ok(ids) = t.encode(text) {
            let _ = t.decode(&ids);
        }
    }
});
