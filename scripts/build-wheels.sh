#!/usr/bin/env bash
# Build hrneo wheels for the host and for the routers.
#
#   scripts/build-wheels.sh [OUTDIR]        (default: dist/)
#   HRNEO_WHEEL_TARGETS="mips-unknown-linux-musl ..." limits the cross targets.
#
# Produces, in OUTDIR:
#   host wheel (rustup toolchain, release profile)
#   abi3 musl wheels (OpenWrt):     aarch64 / mipsel / mips, musllinux_1_1 tags
#   abi3 glibc wheels (Entware):    aarch64 / mipsel / mips, glibc <= 2.27
# Every router wheel is checked: ELF machine and byte order, soft-float on MIPS, max
# GLIBC_ symbol version, size <= 2 MiB, and that pip on such a router accepts its tag.
# Both MIPS byte orders report `uname -m` = mips, so pip computes the same tags for
# them (linux_mips, musllinux_1_N_mips): the files differ by their build tag
# (`-1mips-` big-endian, `-1mipsel-` little-endian). See README "Installing on a router".
set -euo pipefail
# shellcheck source=scripts/cross-env.sh
source "$(dirname "$0")/cross-env.sh"

OUTDIR="${1:-$HRNEO_ROOT/dist}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
MAX_BYTES=$((2 * 1024 * 1024))
read -r -a TARGETS <<<"${HRNEO_WHEEL_TARGETS:-${HRNEO_MUSL_TARGETS[*]} ${HRNEO_GNU_TARGETS[*]}}"
ORIG_PATH="$PATH"
start=$(date +%s)

ensure_cross_tools
ensure_apt unzip unzip

# ---------------------------------------------------------------- host wheel
# The normal toolchain (rustup's, as for `maturin develop`), normal target dir.
if [ "${HRNEO_SKIP_HOST:-0}" != 1 ]; then
    log "host wheel"
    (
        export PATH="$HRNEO_TOOLS_VENV/bin:$ORIG_PATH"
        unset CARGO RUSTC RUSTDOC RUSTC_BOOTSTRAP CARGO_TARGET_DIR
        cd "$HRNEO_ROOT"
        nice -n "$HRNEO_NICE" maturin build --release -q -o "$OUTDIR"
    )
fi

# ---------------------------------------------------------------- checks
# Prints the platform tag pip computes on a router of this kind, for (arch, libc).
# Runs pip's own vendored packaging.tags with the router's facts patched in:
# platform "linux-mips" (uname -m on both MIPS byte orders) and the libc version.
pip_tags_for() {
    "$HRNEO_TOOLS_VENV/bin/python3" - "$1" "$2" <<'PY'
import sys, sysconfig
from pip._vendor.packaging import _manylinux, _musllinux, tags
arch, libc = sys.argv[1], sys.argv[2]          # libc: "glibc-2.27" or "musl-1.2"
sysconfig.get_platform = lambda: f"linux-{arch}"
kind, ver = libc.split("-")
major, minor = (int(x) for x in ver.split("."))
if kind == "musl":
    _musllinux._get_musl_version = lambda exe: _musllinux._MuslVersion(major, minor)
    _manylinux._get_glibc_version = lambda: (-1, -1)
else:
    _musllinux._get_musl_version = lambda exe: None
    _manylinux._get_glibc_version = lambda: (major, minor)
    _manylinux._glibc_version_string = lambda: f"{major}.{minor}"
print(" ".join(tags._linux_platforms(is_32bit=False)))
PY
}

# check_so TARGET SOFILE -> prints the highest GLIBC_x.y needed ("" on musl)
check_so() {
    local t="$1" so="$2" want_machine want_data hdr
    hdr="$(readelf -h "$so")"
    case "$t" in
        aarch64-*) want_machine="AArch64" want_data="little endian" ;;
        mipsel-*) want_machine="MIPS R3000" want_data="little endian" ;;
        mips-*) want_machine="MIPS R3000" want_data="big endian" ;;
    esac
    grep -q "Machine: *$want_machine" <<<"$hdr" || die "$so: not $want_machine"
    grep -q "$want_data" <<<"$hdr" || die "$so: not $want_data"
    if [[ "$t" == mips* ]]; then
        # Not a pipe: grep -q stops reading early and readelf would die of SIGPIPE.
        grep -q "FP ABI: Soft float" <<<"$(readelf -A "$so")" || die "$so: not soft-float"
    fi
    # Only libc (and its satellites) may be needed: no libpython (abi3), no libgcc_s.
    local bad
    bad="$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
        grep -vE '^(libc\.so(\.6)?|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1|ld[.-].*)$' || true)"
    [ -z "$bad" ] || die "$so needs $bad"
    { readelf -V "$so" | grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -uV | tail -1
}

# ---------------------------------------------------------------- router wheels
declare -A BUILT
for t in "${TARGETS[@]}"; do
    log "wheel for $t"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    use_zig_linker "$t"
    flags="$(target_rustflags "$t")"
    # cdylibs on musl must link libc dynamically. RUSTFLAGS replaces (not merges with)
    # .cargo/config.toml's target rustflags, whose +crt-static is for test binaries and
    # would win over a later -crt-static. With --target it does not reach build scripts.
    [[ "$t" == *musl ]] && flags="$flags -C target-feature=-crt-static"
    export RUSTFLAGS="$flags"
    (cd "$HRNEO_ROOT" && nice -n "$HRNEO_NICE" maturin build -q --profile router --target "$t" \
        -Zbuild-std=std,panic_abort --compatibility linux --auditwheel skip -o "$tmp")
    whl="$(ls "$tmp"/*.whl)"
    (cd "$tmp" && unzip -q "$whl" 'hrneo/_core*.so' -d x)
    so="$(ls "$tmp"/x/hrneo/_core*.so)"
    glibc="$(check_so "$t" "$so")"

    arch="${t%%-*}"
    case "$t" in
        *musl)
            [ -z "$glibc" ] || die "$so: musl build needs GLIBC_$glibc"
            # musllinux_1_1: Rust's libc uses musl's pre-1.2 (32-bit time_t) symbols,
            # which musl 1.2 still exports, so OpenWrt 19.07 (1.1.24) and newer load it.
            plat="musllinux_1_1_${arch/mipsel/mips}" libc="musl-1.1" ;;
        *gnu)
            [ -n "$glibc" ] || glibc="2.17"
            [ "$(printf '%s\n' "$glibc" "$HRNEO_GLIBC" | sort -V | tail -1)" = "$HRNEO_GLIBC" ] ||
                die "$so needs GLIBC_$glibc > $HRNEO_GLIBC"
            libc="glibc-$HRNEO_GLIBC"
            if [ "$arch" = aarch64 ]; then
                # pip computes manylinux tags for aarch64; aarch64 glibc starts at 2.17.
                g="$(printf '%s\n' "$glibc" 2.17 | sort -V | tail -1)"
                plat="manylinux_${g/./_}_aarch64"
            else
                # pip never computes manylinux tags for mips (packaging's
                # _have_compatible_abi lists no mips arch): only linux_mips.
                plat="linux_mips"
            fi ;;
    esac
    # The tag pip would compute on that router must include ours.
    pip_tags_for "${arch/mipsel/mips}" "$libc" | tr ' ' '\n' | grep -qx "$plat" ||
        die "pip on a $arch $libc router would refuse $plat"
    build=()
    [[ "$arch" == mips* ]] && build=(--build "1$arch")
    newwhl="$(cd "$tmp" && wheel tags --platform-tag "$plat" "${build[@]}" --remove "$(basename "$whl")")"
    size=$(stat -c %s "$tmp/$newwhl")
    [ "$size" -le "$MAX_BYTES" ] || die "$newwhl is $size bytes > 2 MiB"
    rm -f "$OUTDIR/$newwhl" && mv "$tmp/$newwhl" "$OUTDIR/"
    BUILT[$newwhl]="$size ${glibc:+GLIBC_$glibc}"
    rm -rf "$tmp"
    trap - EXIT
done

log "done in $(($(date +%s) - start)) s; router wheels:"
for w in "${!BUILT[@]}"; do printf '  %-64s %s\n' "$w" "${BUILT[$w]}"; done | sort >&2
