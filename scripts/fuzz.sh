#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a fixed time and prints, per
# target, the executions and crashes, then the totals. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; without TARGETs every target runs.
# Environment: FUZZ_TOOLCHAIN (default nightly), FUZZ_SANITIZER (default
# address; "none" builds faster and runs about twice as fast), FUZZ_JOBS
# (default 1: libFuzzer processes per target).
#
# Inputs come from fuzz/seeds/<target> (committed), tests/fixtures/fuzz/<target>
# (committed crash regressions) and fuzz/corpus/<target> (what earlier runs
# found, not committed; new inputs go there). A crashing input is written to
# fuzz/artifacts/<target>/. Exit status: 0 without crashes, 1 with any.
set -euo pipefail

secs=${1:-60}
shift || true
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! cargo +"$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +"$toolchain" fuzz list)
fi

echo "building ${#targets[@]} targets (sanitizer: $sanitizer)" >&2
cargo +"$toolchain" fuzz build -s "$sanitizer" >&2

logs=$root/fuzz/target/fuzz-logs
mkdir -p "$logs"
total_execs=0
total_crashes=0
printf '%-16s %8s %14s %10s %8s\n' target seconds executions exec/s crashes
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t" "seeds/$t")
    [ -d "$root/tests/fixtures/fuzz/$t" ] && dirs+=("$root/tests/fixtures/fuzz/$t")
    before=$(find "artifacts/$t" -type f | wc -l)
    start=$(date +%s)
    extra=()
    [ "$jobs" -gt 1 ] && extra=(-jobs="$jobs" -workers="$jobs")
    set +e
    cargo +"$toolchain" fuzz run -s "$sanitizer" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        "${extra[@]}" >"$logs/$t.log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    # libFuzzer's final statistics; "#N DONE" when stats were not printed.
    execs=$(awk '/^stat::number_of_executed_units:/ {s += $2} END {print s + 0}' "$logs/$t.log")
    if [ "$execs" -eq 0 ]; then
        execs=$(grep -Eo '^#[0-9]+[[:space:]]+DONE' "$logs/$t.log" | tail -1 | tr -dc '0-9')
        execs=${execs:-0}
    fi
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
    fi
    rate=$((execs / (elapsed > 0 ? elapsed : 1)))
    printf '%-16s %8d %14d %10d %8d\n' "$t" "$elapsed" "$execs" "$rate" "$crashes"
    if [ "$crashes" -gt 0 ]; then
        echo "  log: $logs/$t.log; inputs: fuzz/artifacts/$t/" >&2
    fi
    total_execs=$((total_execs + execs))
    total_crashes=$((total_crashes + crashes))
done
printf '%-16s %8s %14d %10s %8d\n' total '' "$total_execs" '' "$total_crashes"
[ "$total_crashes" -eq 0 ]
