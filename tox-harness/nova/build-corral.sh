#!/bin/sh
# tox commands_pre of the nova env: build corral's debug binary when it is missing
# (the corral compute hosts run it). An existing binary is used as it is: rebuild it
# yourself (cargo build) after changing the Rust code, or point CORRAL_BIN at another.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac
bin=${CORRAL_BIN:-$target/debug/corral}
if [ -x "$bin" ]; then
    echo "corral binary: $bin"
    exit 0
fi
echo "corral binary $bin is missing: cargo build --bin corral"
exec cargo build --bin corral --manifest-path "$repo/Cargo.toml"
