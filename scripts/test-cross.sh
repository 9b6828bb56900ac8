#!/usr/bin/env bash
# Build the pure-Rust test suite (`cargo test`, no python feature) for router targets
# and run it under qemu-user (runners in .cargo/config.toml).
#
#   scripts/test-cross.sh [TARGET...] [-- TEST-ARGS]
#   default targets: mips-unknown-linux-musl mipsel-unknown-linux-musl aarch64-unknown-linux-musl
#
# mips-unknown-linux-musl is big-endian: the golden-byte tests of every netlink message
# passing there unchanged is the proof that no host byte order leaks into the wire format.
# Test binaries are static musl executables, so qemu needs no target root file system.
set -euo pipefail
# shellcheck source=scripts/cross-env.sh
source "$(dirname "$0")/cross-env.sh"

targets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#targets[@]} -gt 0 ] || targets=("${HRNEO_MUSL_TARGETS[@]}")

ensure_cross_tools
cd "$HRNEO_ROOT"
mkdir -p "$HRNEO_CROSS_TARGET_DIR"   # the list of test binaries is written there first
failed=()
for t in "${targets[@]}"; do
    [[ "$t" == *musl ]] || die "$t: only the static musl targets run under qemu-user here"
    log "cargo test --target $t (under $(cargo config get --format json-value "target.$t.runner" \
        -Zunstable-options 2>/dev/null || echo qemu))"
    use_zig_linker "$t"
    unset "$(target_env "$t" RUSTFLAGS)"   # the flags of .cargo/config.toml apply
    s=$(date +%s)
    # --tests: no doctests (rustdoc cannot run them cross), whose "0 passed" would
    # otherwise be the last result line.
    args=(--tests --target "$t" "${BUILD_STD[@]}")
    nice -n "$HRNEO_NICE" cargo test "${args[@]}" --no-run --message-format=json-render-diagnostics |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' >"$HRNEO_CROSS_TARGET_DIR/.test-bins-$t" || { failed+=("$t"); continue; }
    # Proof that qemu runs a foreign binary, not a host one: its ELF header.
    while read -r bin; do
        log "$(basename "$bin"): $(readelf -h "$bin" | sed -n 's/^ *\(Data\|Machine\): *//p' | paste -sd' ')"
    done <"$HRNEO_CROSS_TARGET_DIR/.test-bins-$t"
    if nice -n "$HRNEO_NICE" cargo test "${args[@]}" -- "$@"; then
        log "$t: ok ($(($(date +%s) - s)) s)"
    else
        log "$t: FAILED"
        failed+=("$t")
    fi
done
[ ${#failed[@]} -eq 0 ] || die "failed under qemu: ${failed[*]}"
log "all passed under qemu: ${targets[*]}"
