#!/usr/bin/env bash
# Runs every check and test: formatting; file (700 lines) and function (120) sizes in every crate;
# dependency licences and duplicate majors (scripts/check-deps.py); the Kubernetes manifests against
# the API schemas (scripts/check-kubernetes.py); no declared dependency left
# unused (cargo-machete); unit tests; the SQL contract (sql/*.slt on local DataFusion, Ballista
# standalone and a cluster); end-to-end CLI tests (S3/Azure emulators on 127.0.0.1, HDF5, Chromium,
# which scripts/test-services.sh installs the first time; a missing one fails the run); the
# accuracy fixtures; clippy with warnings as errors; `cargo package` of the two library crates.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nomaly-target}"
./scripts/test-services.sh
cache="${NOMALY_TEST_CACHE:-$HOME/.cache}"
export NOMALY_TEST_PYTHON="${NOMALY_TEST_PYTHON:-$cache/nomaly-py/bin/python}"
export NOMALY_TEST_MOTO="${NOMALY_TEST_MOTO:-$cache/nomaly-py/bin/moto_server}"
export NOMALY_TEST_SCHEMATHESIS="${NOMALY_TEST_SCHEMATHESIS:-$cache/nomaly-py/bin/schemathesis}"
# The separate-hosts cluster test makes network namespaces (root, iproute2): here it must run.
export NOMALY_TEST_NETNS="${NOMALY_TEST_NETNS:-1}"
export NOMALY_TEST_AZURITE="${NOMALY_TEST_AZURITE:-$cache/nomaly-node/node_modules/.bin/azurite-blob}"
features=()
if pkg-config --exists hdf5 2>/dev/null; then
    features=(--features nomaly-cli/hdf5)
elif [ "${NOMALY_TEST_WITHOUT_HDF5:-}" = 1 ]; then
    echo "test.sh: NOMALY_TEST_WITHOUT_HDF5=1: HDF5 inputs are tested for their refusal only" >&2
else
    # A missing service fails the run rather than skipping its tests quietly.
    echo "test.sh: libhdf5 is missing and scripts/test-services.sh could not install it; install libhdf5-dev, or set NOMALY_TEST_WITHOUT_HDF5=1 to test only that HDF5 inputs are refused" >&2
    exit 1
fi
cargo fmt --all --check
python3 scripts/check-sizes.py crates udfs tests examples
python3 scripts/check-deps.py
"$NOMALY_TEST_PYTHON" scripts/check-kubernetes.py
"$cache/nomaly-tools/bin/cargo-machete"
cargo test --workspace --locked "${features[@]}" "$@"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
# The two library crates package as crates.io would take them (manifest, metadata, file list).
# Not verified by building the .crate files: that builds DataFusion again with the packages' own
# feature sets (9 min on 2 cores and several GB of target directory); examples/embed-datafusion
# builds and tests them as a DataFusion user's program instead.
cargo package -p nomaly-detectors -p nomaly-udfs --locked --no-verify --quiet
