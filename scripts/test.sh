#!/usr/bin/env bash
# Runs every test: unit tests, the SQL contract (sql/*.slt on local DataFusion and Ballista
# standalone), end-to-end CLI tests and the accuracy fixtures. Needs only cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nomaly-target}"
cargo test --workspace --locked "$@"
