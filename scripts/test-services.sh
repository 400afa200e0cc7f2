#!/usr/bin/env bash
# Installs the servers the tests of remote inputs start on 127.0.0.1, once, under ~/.cache:
#   ~/.cache/nomaly-py    a Python venv with moto_server (S3-compatible) and the upload clients
#   ~/.cache/nomaly-node  Azurite (Azure Blob emulator)
# Debian's libhdf5-dev (for the `hdf5` feature) when it is missing and apt-get can run, and
# Debian's chromium + chromium-driver for the dashboard's browser test, and openssl and curl for
# the API's TLS test; cargo-machete (the unused-dependency check) under ~/.cache/nomaly-tools.
# Re-running is cheap: each part is skipped when its pinned versions are already installed.
# Needs python3 (with venv) and npm, both on these machines; nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${NOMALY_TEST_CACHE:-$HOME/.cache}"
py="$cache/nomaly-py"
node="$cache/nomaly-node"

stamp_py="$py/.nomaly-$(sha1sum scripts/test-services/requirements.txt | cut -c1-12)"
if [ ! -f "$stamp_py" ]; then
    echo "test-services: installing moto and azure-storage-blob into $py" >&2
    python3 -m venv "$py"
    "$py/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-services/requirements.txt
    touch "$stamp_py"
fi

stamp_node="$node/.nomaly-$(sha1sum scripts/test-services/package.json | cut -c1-12)"
if [ ! -f "$stamp_node" ]; then
    echo "test-services: installing Azurite into $node" >&2
    mkdir -p "$node"
    cp scripts/test-services/package.json "$node/package.json"
    (cd "$node" && npm install --no-audit --no-fund --silent)
    touch "$stamp_node"
fi

if ! pkg-config --exists hdf5 2>/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null; then
        echo "test-services: installing libhdf5-dev (HDF5 inputs)" >&2
        { $sudo apt-get update -q && $sudo apt-get install -y -q libhdf5-dev pkg-config; } >/dev/null 2>&1 \
            || echo "test-services: could not install libhdf5-dev; HDF5 tests run without the feature" >&2
    fi
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "test-services: installing chromium and chromium-driver (the dashboard's browser test)" >&2
    { $sudo apt-get install -y -q chromium chromium-driver || { $sudo apt-get update -q && $sudo apt-get install -y -q chromium chromium-driver; }; } >/dev/null 2>&1 \
        || echo "test-services: could not install chromium; the dashboard test will fail saying so" >&2
fi

# openssl makes the self-signed certificate of the TLS test; curl is its HTTPS client.
if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "test-services: installing openssl and curl (the API's TLS test)" >&2
    { $sudo apt-get install -y -q openssl curl || { $sudo apt-get update -q && $sudo apt-get install -y -q openssl curl; }; } >/dev/null 2>&1 \
        || echo "test-services: could not install openssl or curl; the TLS test will fail saying so" >&2
fi

# iproute2 (`ip netns`) gives the separate-hosts cluster test its hosts.
if ! command -v ip >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "test-services: installing iproute2 (the separate-hosts cluster test)" >&2
    { $sudo apt-get install -y -q iproute2 || { $sudo apt-get update -q && $sudo apt-get install -y -q iproute2; }; } >/dev/null 2>&1 \
        || echo "test-services: could not install iproute2; the separate-hosts test will fail saying so" >&2
fi

# cargo-machete: .ci/run fails on a dependency a crate declares and never uses.
tools="$cache/nomaly-tools"
machete_version=0.9.2
if [ "$("$tools/bin/cargo-machete" --version 2>/dev/null)" != "$machete_version" ]; then
    echo "test-services: installing cargo-machete $machete_version into $tools" >&2
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$tools" cargo-machete --version "$machete_version"
fi
