//! Any bytes given as a model's `config.json` (decoder, encoder, or a training config) give a
//! config or an error, never a panic or an allocation abort; an accepted config's sizes are
//! within the stated limits (`tessera::models::limits`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::models::encoder::BertConfig;
use tessera::models::{limits, ModelConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(c) = ModelConfig::from_hf_json(&v) {
        assert!(c.max_position_embeddings <= limits::MAX_CONTEXT);
        assert!(c.vocab_size <= limits::MAX_VOCAB && c.hidden_size <= limits::MAX_HIDDEN);
        // Round trip through the config.json it writes.
        let again = ModelConfig::from_hf_json(&c.to_hf_json()).expect("own config.json");
        assert_eq!(again.hidden_size, c.hidden_size);
        std::hint::black_box(c.num_params());
    }
    if let Ok(c) = BertConfig::from_hf_json(&v) {
        assert!(c.max_position_embeddings <= limits::MAX_CONTEXT);
        let again = BertConfig::from_hf_json(&c.to_hf_json()).expect("own config.json");
        assert_eq!(again.hidden_size, c.hidden_size);
    }
    let _ = tessera::train::TrainConfig::from_config_json(&v);
});
