# shellcheck shell=bash
# Shared setup for the router cross builds (sourced by build-wheels.sh, test-cross.sh,
# smoke-arm64.sh). Route (see README "Installing on a router"): Debian's rustc/cargo 1.96
# (rustc-web) + RUSTC_BOOTSTRAP=1 -Zbuild-std, because rustup cannot fetch router targets
# here; zig (PyPI `ziglang`) links, through cargo-zigbuild; qemu-user-static runs.
#
# Knobs (environment):
#   HRNEO_CROSS_CACHE       tools venv, debootstrap rootfs  (default ~/.cache/hrneo-cross)
#   HRNEO_CROSS_TARGET_DIR  cargo target dir for cross builds (default <repo>/target/cross)
#   HRNEO_NICE              niceness of the heavy builds (default 10: the machine is shared)

HRNEO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HRNEO_CROSS_CACHE="${HRNEO_CROSS_CACHE:-$HOME/.cache/hrneo-cross}"
HRNEO_CROSS_TARGET_DIR="${HRNEO_CROSS_TARGET_DIR:-$HRNEO_ROOT/target/cross}"
HRNEO_NICE="${HRNEO_NICE:-10}"
HRNEO_TOOLS_VENV="$HRNEO_CROSS_CACHE/venv"

# The three router targets (used by the scripts that source this file).
# shellcheck disable=SC2034
HRNEO_MUSL_TARGETS=(mips-unknown-linux-musl mipsel-unknown-linux-musl aarch64-unknown-linux-musl)
# shellcheck disable=SC2034
HRNEO_GNU_TARGETS=(mips-unknown-linux-gnu mipsel-unknown-linux-gnu aarch64-unknown-linux-gnu)
# Entware (Keenetic and others) ships glibc 2.27: link against nothing newer.
HRNEO_GLIBC="${HRNEO_GLIBC:-2.27}"

log() { printf '[cross] %s\n' "$*" >&2; }
die() { printf '[cross] ERROR: %s\n' "$*" >&2; exit 1; }

# apt packages, installed only when their command is missing (apt-get update first:
# a fresh machine has stale or empty lists).
ensure_apt() {
    local missing=() cmd pkg
    while [ $# -gt 0 ]; do
        cmd="$1" pkg="$2"; shift 2
        [ -e "$cmd" ] || command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_cross_tools() {
    ensure_apt /usr/bin/rustc rustc-web /usr/bin/cargo cargo-web \
        /usr/lib/rustlib/src/rust/library/std rust-web-src \
        qemu-mips-static qemu-user-static readelf binutils
    if [ ! -x "$HRNEO_TOOLS_VENV/bin/cargo-zigbuild" ] || [ ! -x "$HRNEO_TOOLS_VENV/bin/wheel" ]; then
        log "tools venv $HRNEO_TOOLS_VENV (ziglang, cargo-zigbuild, maturin, wheel)"
        mkdir -p "$HRNEO_CROSS_CACHE"
        python3 -m venv "$HRNEO_TOOLS_VENV"
        "$HRNEO_TOOLS_VENV/bin/pip" install -q --disable-pip-version-check \
            ziglang cargo-zigbuild 'maturin>=1.7,<2' wheel
    fi
    # Debian's cargo/rustc must come before rustup's: rust-web-src matches only them.
    # The venv comes first so that maturin/cargo-zigbuild find its `ziglang`.
    export PATH="$HRNEO_TOOLS_VENV/bin:/usr/bin:$PATH"
    export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    unset RUSTUP_TOOLCHAIN RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET
    export RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_DIR="$HRNEO_CROSS_TARGET_DIR"
}

# Env var name for a per-target cargo setting: CARGO_TARGET_<TRIPLE>_<KEY>.
target_env() { printf 'CARGO_TARGET_%s_%s' "$(echo "$1" | tr 'a-z-' 'A-Z_')" "$2"; }

# zig's name for each target. Both MIPS libcs of the routers are soft-float (OpenWrt's
# ld-musl-mips*-sf, Entware's mips*sf-k3.4): zig's *eabi = soft float, *eabihf = hard.
# cargo-zigbuild would pick gnueabihf for mips*-gnu, so we use our own linker wrappers.
zig_target() {
    case "$1" in
        mips-unknown-linux-musl) echo mips-linux-musleabi ;;
        mipsel-unknown-linux-musl) echo mipsel-linux-musleabi ;;
        aarch64-unknown-linux-musl) echo aarch64-linux-musl ;;
        mips-unknown-linux-gnu) echo "mips-linux-gnueabi.$HRNEO_GLIBC" ;;
        mipsel-unknown-linux-gnu) echo "mipsel-linux-gnueabi.$HRNEO_GLIBC" ;;
        aarch64-unknown-linux-gnu) echo "aarch64-linux-gnu.$HRNEO_GLIBC" ;;
        *) die "unknown target $1" ;;
    esac
}

# Rust's mips*-unknown-linux-gnu are hard-float; Entware's glibc is soft-float, and
# glibc's loader refuses an object with another FP ABI. Build ours (and std) soft-float.
target_rustflags() {
    case "$1" in
        mips-unknown-linux-gnu | mipsel-unknown-linux-gnu) echo "-C target-feature=+soft-float" ;;
        *) echo "" ;;
    esac
}

# Writes a linker wrapper for TARGET and exports CARGO_TARGET_<T>_LINKER to it.
# `cargo-zigbuild zig cc` is zig cc plus the argument fix-ups rustc's output needs.
use_zig_linker() {
    local t="$1" w
    w="$HRNEO_CROSS_CACHE/bin/zigcc-$t"
    mkdir -p "$HRNEO_CROSS_CACHE/bin"
    cat >"$w.tmp" <<WRAP
#!/bin/sh
export CARGO_ZIGBUILD_ZIG_COMMAND="$HRNEO_TOOLS_VENV/bin/python3"
export CARGO_ZIGBUILD_ZIG_COMMAND_ARGS='-m ziglang'
exec "$HRNEO_TOOLS_VENV/bin/cargo-zigbuild" zig cc -- -g -fno-sanitize=all -target $(zig_target "$t") "\$@"
WRAP
    chmod +x "$w.tmp" && mv "$w.tmp" "$w"
    export "$(target_env "$t" LINKER)=$w"
}

# -Zbuild-std arguments: every target builds its std from rust-web-src.
# shellcheck disable=SC2034,SC2054
BUILD_STD=(-Zbuild-std=std,panic_abort)
