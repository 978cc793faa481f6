#!/usr/bin/env bash
# The unsafe-heavy unit tests under Miri (needs a nightly toolchain with the miri component:
# `rustup toolchain install nightly --component miri`). Miri runs the portable code paths: CPU
# feature detection reports only the build's baseline there, so the SIMD kernels (x86
# intrinsics, inline assembly) are not what runs; their parity tests against the portable
# kernels run natively in the normal suite.
#   - tessera-pool: HotPool's job hand-off, panics carried to the caller, SharedMut;
#   - tessera-word2vec: the Hogwild matrices (threads updating the same rows through relaxed
#     atomics);
#   - util::fs (atomic writes from many threads);
#   - the portable quantized dot products and (de)quantizers, the f16 KV-cache attention
#     kernels, fast exp.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/miri}"
# Deterministic floats: by default Miri perturbs transcendental functions (exp, ln) by a few ulp
# to flush out code relying on exact libm results, which the accuracy tests of fast_exp would
# report against the perturbed reference.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-deterministic-floats}"
cargo +nightly miri test -p tessera-pool
cargo +nightly miri test -p tessera-word2vec --lib -- hogwild
cargo +nightly miri test -p tessera --lib -- \
  util::fs kernels::quant::dot_scalar kernels::quant::formats kernels::quant::quantize \
  kernels::fast_exp infer::ops
