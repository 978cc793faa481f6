//! Resolve all-MiniLM-L6-v2 in the model cache (fetching it on first use) and check its weights'
//! sha256.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
#[allow(dead_code)]
pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/reference/minilm_embeddings.json"
);

/// The all-MiniLM-L6-v2 directory of the model cache (fetched on first use, as `tessera` does);
/// panics when it cannot be fetched or is not the model the fixture was made with.
pub fn minilm_dir() -> PathBuf {
    let dir = tessera::hub::resolve("all-minilm-l6-v2").expect("fetch all-minilm-l6-v2");
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap_or_else(|e| panic!("{}: {e}", st.display()));
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hash,
        MODEL_SHA256,
        "{} is not the all-MiniLM-L6-v2 the fixture was made with; remove it and run again",
        st.display()
    );
    dir
}
