#!/usr/bin/env bash
# Cross-build the quantized-kernel tests for aarch64 and run them under qemu-user, twice: on
# qemu's "max" CPU (has dotprod: levels neon-dotprod, neon, scalar) and on a Cortex-A53 (no
# dotprod: levels neon, scalar). Every NEON kernel is compared with the portable one (the
# quantized products, the f16 attention, word2vec's Hogwild row operations).
#
# Usage: bash scripts/test_aarch64.sh [extra cargo test filters...]
# Env: CARGO_TARGET_DIR (default /work/target-aarch64 if /work exists, else target-aarch64),
#      JOBS (cargo -j, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

# Tools: the Rust target, the cross linker and libc, qemu-user.
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || [ ! -d "$SYSROOT/lib" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update
    $SUDO apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    if [ -d /work ]; then CARGO_TARGET_DIR=/work/target-aarch64; else CARGO_TARGET_DIR=target-aarch64; fi
fi
export CARGO_TARGET_DIR
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT"
JOBS="${JOBS:-1}"

# The tests that exercise the kernels: the quant unit tests (each NEON function against the
# portable one, directly), the f16 attention kernels, the product tests of tests/quant.rs
# (every available level against the scalar one), and tessera-word2vec's Hogwild row kernels.
run() {
    nice cargo test --release --target "$TARGET" -j "$JOBS" "$@"
}
build() {
    run -p tessera --lib --no-run
    run -p tessera --test quant --no-run
    run -p tessera-word2vec --lib --no-run
}

build
for cpu in max cortex-a53; do
    echo "=== QEMU_CPU=$cpu ==="
    export QEMU_CPU=$cpu
    run -p tessera --lib -- kernels::quant infer::ops "${@}"
    run -p tessera --test quant -- "${@}"
    run -p tessera-word2vec --lib -- hogwild "${@}"
done
echo "aarch64 kernel tests passed on qemu (max, cortex-a53)"
