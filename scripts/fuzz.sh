#!/usr/bin/env bash
# Build the cargo-fuzz targets in fuzz/ and run each in turn for SECONDS_PER_TARGET
# (default 60), one fuzzer at a time, on its seeds in fuzz/corpus/<target>/; fails if
# any target crashes (a panic, a failed invariant, an overflow, a timeout or running
# out of memory). Prints executions, exec/s and coverage per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: every target)
#   FUZZ_SANITIZER=address    ASan build (default none, see below)
#   FUZZ_ARGS="-runs=10000000"   more libFuzzer flags (the time stays a cap)
#   FUZZ_TARGET_DIR=DIR       build directory (default fuzz/target/<sanitizer>)
#
# Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets it take the -Z flags of a libFuzzer
# build (nightly needs none). Needs cargo-fuzz (`cargo install cargo-fuzz`).
# Sanitizer "none" by default: the core is safe Rust without `unsafe`, so ASan finds
# little there and costs ~4x the executions; overflow checks and debug assertions stay
# on either way (they catch arithmetic on hostile lengths). New inputs go to
# fuzz/target/corpus/<target>/, crashes to fuzz/artifacts/<target>/; fuzz/corpus/ is
# only read (README, "Fuzzing": how to keep the new inputs that reach new code).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift $(($# > 0 ? 1 : 0))
san=${FUZZ_SANITIZER:-none}
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
# One build directory per sanitizer: switching would rebuild everything.
tdir=${FUZZ_TARGET_DIR:-$PWD/fuzz/target/$san}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    read -r -a targets <<<"$(cargo fuzz list | tr '\n' ' ')"
fi
read -r -a extra <<<"${FUZZ_ARGS:-}"

start=$(date +%s)
cargo fuzz build -s "$san" --target-dir "$tdir"
echo "build: $(($(date +%s) - start)) s"

mkdir -p fuzz/target/logs
failed=()
printf '%-12s %12s %8s %8s %6s %6s\n' target executions exec/s seconds cov ft
for t in "${targets[@]}"; do
    work="fuzz/target/corpus/$t"
    log="fuzz/target/logs/$t.log"
    mkdir -p "$work" "fuzz/corpus/$t"
    rc=0
    cargo fuzz run -s "$san" --target-dir "$tdir" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 ||
        rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
    # The last status line: "#N ... cov: C ft: F ...".
    cov=$(sed -n 's/^#[0-9].* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' "$log" | tail -n1)
    read -r c f <<<"${cov:-? ?}"
    printf '%-12s %12s %8s %8s %6s %6s\n' "$t" "${runs:-?}" "${rate:-?}" "${took:-?}" "$c" "$f"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        grep -E -A12 "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -40 >&2 || true
        echo "$t failed (exit $rc): log $log, input in fuzz/artifacts/$t/; replay:" \
            "RUSTC_BOOTSTRAP=1 cargo fuzz run -s $san $t fuzz/artifacts/$t/<file>" >&2
    fi
done
echo "total: $(($(date +%s) - start)) s"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FUZZ FAILED: ${failed[*]}" >&2
    exit 1
fi
