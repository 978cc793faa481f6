#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then run every test.
#   - WordNet 3.0 dictionary files (Debian package wordnet-base) for METEOR's synonym stage.
# Everything else (the Rust toolchain, crates) comes through cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${TESSERA_WORDNET:-}" ]; then
  echo "installing wordnet-base (WordNet 3.0 for METEOR)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >/dev/null
fi
exec cargo test --release --workspace "$@"
