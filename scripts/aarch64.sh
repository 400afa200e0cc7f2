#!/usr/bin/env bash
# Nomaly on 64-bit ARM, checked on an x86-64 machine under qemu's user-mode emulation:
#   1. the detectors' tests (unit tests and the accuracy fixtures against PyOD / scikit-learn),
#      built for aarch64-unknown-linux-gnu and run by qemu-aarch64;
#   2. `score_digest` natively and under qemu: every detector must fit the same model bytes and
#      score the same bits on both architectures (diff of the two outputs);
#   3. `cargo check` of the whole product (the `nomaly` CLI with DataFusion and Ballista) for aarch64.
# Emulated speed means nothing; this checks that ARM builds and gives the same bits.
# Installs what it needs once (Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user,
# and rustup's aarch64 standard library). Not part of .ci/run: 196 s once the target holds an
# earlier aarch64 check; the first check of DataFusion and Ballista for aarch64 takes ~17 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nomaly-target}"
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || [ ! -d "$sysroot/lib" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "aarch64: installing gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user" >&2
    $sudo apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null \
        || { $sudo apt-get update -q >/dev/null \
            && $sudo apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null; }
fi
if ! rustup target list --installed | grep -qx "$target"; then
    echo "aarch64: adding rustup's $target standard library" >&2
    rustup target add "$target"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc

echo "== 1. detectors' tests on $target (qemu)" >&2
cargo test --release --locked --target "$target" -p nomaly-detectors

echo "== 2. the same models and scores on x86-64 and $target" >&2
cargo build --release --locked -p nomaly-detectors --example score_digest
cargo build --release --locked --target "$target" -p nomaly-detectors --example score_digest
native="$CARGO_TARGET_DIR/release/examples/score_digest"
arm="$CARGO_TARGET_DIR/$target/release/examples/score_digest"
# The walk column names the tree walk, which differs by CPU; the digests must not.
"$native" | cut -f1 | uniq >"$CARGO_TARGET_DIR/score_digest.native"
qemu-aarch64 -L "$sysroot" "$arm" | cut -f1 | uniq >"$CARGO_TARGET_DIR/score_digest.$target"
if diff "$CARGO_TARGET_DIR/score_digest.native" "$CARGO_TARGET_DIR/score_digest.$target"; then
    echo "aarch64: every detector fits the same model and scores the same bits on both" >&2
    cat "$CARGO_TARGET_DIR/score_digest.native"
else
    echo "aarch64: models or scores differ between x86-64 and $target (diff above)" >&2
    exit 1
fi

echo "== 3. the whole product compiles for $target" >&2
cargo check --locked --target "$target" -p nomaly-cli
echo "aarch64: all three checks passed" >&2
