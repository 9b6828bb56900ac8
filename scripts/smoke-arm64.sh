#!/usr/bin/env bash
# Import smoke test of the aarch64 glibc wheel in a real Debian arm64 userland under qemu.
#
#   scripts/smoke-arm64.sh [WHEEL [MUSL-WHEEL]]
#       defaults: the manylinux / musllinux aarch64 wheels in dist/
#
# 1. glibc wheel: pip-installed into Debian's arm64 python3 and exercised (smoke_core.py).
# 2. musl wheel (if there is one): its extension is loaded by Debian's arm64 musl loader
#    in ldd mode, which relocates it: every symbol must resolve except Python's own.
#
# The arm64 root file system (debootstrap --foreign, bookworm, python3 + python3-yaml +
# python3-pip) is cached in $HRNEO_CROSS_CACHE/rootfs-arm64. Its packages are unpacked
# with dpkg-deb on the host instead of debootstrap's second stage, and Python runs as
# `chroot ROOTFS /qemu-aarch64-static /usr/bin/python3`: no binfmt_misc registration is
# needed (that would change the host kernel's settings). The run is in a fresh, empty
# network namespace (unshare -n), so nothing it does can reach the host's netfilter.
set -euo pipefail
# shellcheck source=scripts/cross-env.sh
source "$(dirname "$0")/cross-env.sh"

WHEEL="${1:-}"
if [ -z "$WHEEL" ]; then
    WHEEL="$(ls "$HRNEO_ROOT"/dist/hrneo-*-manylinux_*_aarch64.whl 2>/dev/null | tail -1 || true)"
fi
MUSL_WHEEL="${2:-$(ls "$(dirname "$WHEEL")"/hrneo-*-musllinux_*_aarch64.whl 2>/dev/null | tail -1 || true)}"
[ -f "$WHEEL" ] || die "no aarch64 glibc wheel (run scripts/build-wheels.sh first)"
ensure_apt debootstrap debootstrap qemu-aarch64-static qemu-user-static unshare util-linux

ROOTFS="$HRNEO_CROSS_CACHE/rootfs-arm64"
INCLUDE="python3,python3-pip,python3-yaml,musl"
if [ "$(cat "$ROOTFS/.hrneo-ready" 2>/dev/null)" != "$INCLUDE" ]; then
    # The host's own Debian mirror (from its apt sources), not a hard-coded one.
    mirror="$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
    [ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    [ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources"
    log "debootstrap arm64 bookworm into $ROOTFS (once; cached)"
    rm -rf "$ROOTFS"
    debootstrap --foreign --arch arm64 --variant=minbase \
        --include="$INCLUDE" bookworm "$ROOTFS" "$mirror" >/dev/null
    # Unpack everything it downloaded (first stage unpacks only the base set).
    for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOTFS"; done
    echo "$INCLUDE" >"$ROOTFS/.hrneo-ready"
fi
cp /usr/bin/qemu-aarch64-static "$ROOTFS/qemu-aarch64-static"

work="/tmp/hrneo-smoke"
rm -rf "$ROOTFS$work" && mkdir -p "$ROOTFS$work"
cp "$WHEEL" "$ROOTFS$work/"
cp "$HRNEO_ROOT/scripts/smoke_core.py" "$ROOTFS$work/"
# A clean environment: the host's PIP_* settings (find-links, certs) mean nothing there.
run() {
    unshare -n env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        chroot "$ROOTFS" /qemu-aarch64-static "$@"
}

log "emulated: $(run /usr/bin/uname -m) / $(run /usr/bin/python3 -c 'import platform; print(platform.python_version(), platform.libc_ver())')"
# --no-index: the dependency pyyaml must be satisfied by the rootfs' python3-yaml, as
# by a router's package manager; nothing is downloaded. Debian marks its python3
# "externally managed", hence --break-system-packages (the rootfs is a scratch copy).
run /usr/bin/python3 -m pip uninstall -q -y --break-system-packages hrneo 2>/dev/null || true
run /usr/bin/python3 -m pip install -q --disable-pip-version-check --no-index --no-compile \
    --break-system-packages --no-warn-script-location --root-user-action=ignore "$work/$(basename "$WHEEL")"
run /usr/bin/python3 "$work/smoke_core.py"
run /usr/bin/python3 -m pip uninstall -q -y --break-system-packages --root-user-action=ignore hrneo

if [ -f "$MUSL_WHEEL" ]; then
    mkdir -p "$ROOTFS$work/musl"
    unzip -q -o "$MUSL_WHEEL" 'hrneo/_core*.so' -d "$ROOTFS$work/musl"
    so="$(cd "$ROOTFS" && ls .$work/musl/hrneo/_core*.so | sed 's/^\.//')"
    out="$(run /lib/ld-musl-aarch64.so.1 --list "$so" 2>&1 || true)"
    unresolved="$(sed -n 's/^Error relocating [^:]*: \([^:]*\): symbol not found$/\1/p' <<<"$out")"
    others="$(grep -v '^Error relocating .*: symbol not found$' <<<"$out" | grep -v "=>\|ld-musl\|^\s*$" || true)"
    notpy="$(grep -vE '^_?Py' <<<"$unresolved" || true)"
    [ -z "$others" ] || die "musl loader: $others"
    [ -z "$notpy" ] || die "musl wheel needs symbols musl lacks: $notpy"
    [ -n "$unresolved" ] || die "musl loader resolved no Python symbol: did it really load $so?"
    log "musl loader relocated $(basename "$MUSL_WHEEL"): $(wc -l <<<"$unresolved") unresolved, all Python's"
fi
rm -rf "${ROOTFS:?}$work"
log "arm64 smoke test passed: $(basename "$WHEEL")${MUSL_WHEEL:+ + $(basename "$MUSL_WHEEL")}"
