#!/bin/sh
# Runs every test of corral on a fresh Debian 12 machine, as root: installs what
# the tests need, checks formatting and lints, then runs the unit tests and the
# integration tests against real runc (and, where present, the tox harness).
set -eu

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh

if [ "${CI:-}" = true ]; then
    # A clean build once: incremental state would only take disk.
    export CARGO_INCREMENTAL=0
fi
echo "==> disk: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
scripts/services.sh
echo "==> cargo test (unit tests, real runc, real RabbitMQ)"
cargo test
# Integration tests run concurrently within a binary; each uses its own daemon.

if [ -f tox-harness/tox.ini ]; then
    echo "==> tox harness"
    scripts/tox.sh -e oslo,nova
    echo "==> benchmark runner, short mode (exercised, never judged on timings)"
    scripts/tox.sh -e bench -- --short
fi
echo "all tests passed"
