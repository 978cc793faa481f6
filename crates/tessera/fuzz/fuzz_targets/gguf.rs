//! Any bytes given to the GGUF reader (and to the tokenizer built from its metadata) give a
//! value or an error, never a panic, an overflow or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::tokenizer::gguf::GgufTokenizer;
use tessera::weights::Gguf;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::from_bytes(data.to_vec()) else {
        return;
    };
    for (k, v) in g.metadata() {
        std::hint::black_box((k.len(), v.summary(16)));
    }
    for t in g.tensors() {
        std::hint::black_box(t.data.iter().fold(0u8, |a, &b| a ^ b));
    }
    std::hint::black_box((g.parameter_count(), g.type_counts()));
    if let Ok(t) = GgufTokenizer::from_gguf(&g) {
        let _ = t.tokenizer.encode("Hello wörld 123 <|im_start|>");
    }
});
