//! Any bytes given as a model's `config.json` (Hugging Face dialect of any family, tessera's own
//! serialized config, or a training config) give a config or an error, never a panic or an
//! allocation abort; an accepted config's sizes are within the stated limits
//! (`tessera::models::limits`) and it round-trips through both dialects it writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::models::{limits, TransformerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(c) = TransformerConfig::from_hf_json(&v) {
        assert!(c.max_position_embeddings <= limits::MAX_CONTEXT);
        assert!(c.vocab_size <= limits::MAX_VOCAB && c.hidden_size <= limits::MAX_HIDDEN);
        // Round trip through the config.json it writes.
        let again = TransformerConfig::from_hf_json(&c.to_hf_json()).expect("own config.json");
        assert_eq!(again.hidden_size, c.hidden_size);
        // And through tessera's own dialect, exactly.
        let own = serde_json::to_value(&c).expect("serializable");
        assert_eq!(TransformerConfig::from_hf_json(&own).expect("own dialect"), c);
        std::hint::black_box(c.num_params());
    }
    let _ = tessera::train::TrainConfig::from_config_json(&v);
});
