//! Locate the all-MiniLM-L6-v2 directory in the model cache and check its weights' sha256.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
#[allow(dead_code)]
pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/minilm_embeddings.json"
);

/// `$TESSERA_CACHE` else `$XDG_CACHE_HOME/tessera/models` else `$HOME/.cache/tessera/models`,
/// plus `all-minilm-l6-v2`; panics with how to fetch it when missing or different.
pub fn minilm_dir() -> PathBuf {
    let dir = tessera::hub::cache_dir()
        .expect("no cache directory: set TESSERA_CACHE or HOME")
        .join("all-minilm-l6-v2");
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Run scripts/fetch_models.sh to fetch all-minilm-l6-v2 into the cache",
            st.display()
        )
    });
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hash,
        MODEL_SHA256,
        "{} is not the all-MiniLM-L6-v2 the fixture was made with; re-run scripts/fetch_models.sh",
        st.display()
    );
    dir
}
