#!/usr/bin/env bash
# The router builds against real aarch64 and mipsel kernels: boot Debian 12's
# own kernel for the architecture under qemu-system (TCG, no network), run a test payload
# in the guest, read PASS/FAIL and counts from the serial console.
#
#   scripts/test-vm.sh arm64  [WHEEL]   shipped aarch64 glibc wheel (default: built by
#                                       scripts/build-wheels.sh): smoke test + tests/kernel
#   scripts/test-vm.sh mipsel           test-only hard-float build of the crate: smoke test;
#                                       the shipped soft-float musl code path: the static
#                                       test binaries of scripts/test-cross.sh, whose
#                                       kernel test (rust/tests/kernel_netlink.rs) must run
#
# Why: qemu-user refuses NETLINK_NETFILTER sockets, so under qemu-user only the bytes of
# messages can be checked, never a kernel's answer. Byte order, alignment and struct layout
# bugs of the netlink code show up against a real kernel of the architecture.
#
# Knobs (environment):
#   HRNEO_VM_CACHE    rootfs, kernels, disk images (default ~/.cache/hrneo-vm; rebuilt
#                     when the recipe below changes)
#   HRNEO_VM_PARTS    what runs in the guest, of: smoke (scripts/vm/smoke_vm.py), kernel
#                     (tests/kernel), rust (the static musl test binaries). Default arm64:
#                     "smoke kernel", mipsel: "smoke rust" (mipsel's tests/kernel, with the
#                     hard-float build, takes 8-20 min)
#   HRNEO_VM_TIMEOUT  seconds for the whole qemu run (default from the parts)
#   HRNEO_CROSS_TARGET_DIR, HRNEO_NICE: see scripts/cross-env.sh
#
# Nothing here needs binfmt_misc, loop devices or changes to the host's apt configuration:
# debootstrap --foreign downloads the guest's packages (kernel included) and they are
# unpacked with dpkg-deb on the host; the root file system is an ext4 image made by
# `mke2fs -d`, booted read-write through qemu's snapshot (the cached image never changes);
# a small busybox initramfs loads the disk modules and switch_roots to it; the payload is
# a second ext4 image. Facts and pitfalls: README "How the wheels are checked".
set -euo pipefail
# shellcheck source=scripts/cross-env.sh
source "$(dirname "$0")/cross-env.sh"

ARCH="${1:-}"
WHEEL="${2:-}"
case "$ARCH" in
    arm64 | mipsel) ;;
    *) die "usage: scripts/test-vm.sh arm64|mipsel [WHEEL]" ;;
esac
[ -z "$WHEEL" ] || [ "$ARCH" = arm64 ] || die "a WHEEL is only taken for arm64"
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
[ -z "$WHEEL" ] || WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"

VM_CACHE="${HRNEO_VM_CACHE:-$HOME/.cache/hrneo-vm}"
VM_DIR="$HRNEO_ROOT/scripts/vm"
case "$ARCH" in
    arm64) DEFAULT_PARTS="smoke kernel" ;;
    mipsel) DEFAULT_PARTS="smoke rust" ;;
esac
read -r -a PARTS <<<"${HRNEO_VM_PARTS:-$DEFAULT_PARTS}"
for p in "${PARTS[@]}"; do
    case "$p" in
        smoke | kernel) ;;
        rust) ;;
        *) die "unknown part '$p' (smoke, kernel, rust)" ;;
    esac
done
vlog() { printf '[vm %s] %s\n' "$ARCH" "$*" >&2; }
t_start=$(date +%s)

# ---------------------------------------------------------------- the guest system
# The guest's packages: what the daemon drives, Python for the wheel and the test suite
# (pytest from Debian), busybox for the initramfs. iptables is used in its legacy flavour,
# as on Entware; nftables is the second backend's (tests/kernel/test_nftset.py and friends).
GUEST_PACKAGES="python3,python3-yaml,python3-pytest,python3-pytest-timeout,ipset,iptables,nftables,conntrack,iproute2,kmod,procps,busybox-static"
case "$ARCH" in
    arm64)
        KERNEL_PACKAGE=linux-image-arm64
        QEMU=qemu-system-aarch64 QEMU_PKG=qemu-system-arm
        QEMU_ARGS=(-M virt -cpu cortex-a57 -smp 2 -m 1024)
        CONSOLE=ttyAMA0 ;;
    mipsel)
        KERNEL_PACKAGE=linux-image-4kc-malta
        QEMU=qemu-system-mipsel QEMU_PKG=qemu-system-mips
        # Malta has no HIGHMEM support in Debian's kernel: 256 MiB is the most it uses.
        QEMU_ARGS=(-M malta -cpu 24Kc -m 256 -vga none)
        CONSOLE=ttyS0 ;;
esac
# Modules the guest gets (with their dependencies): all of netfilter, veth and dummy for
# the test namespaces; the initramfs gets the disk ones.
NET_MODULE_DIRS=(kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter)
NET_MODULES=(veth dummy)
DISK_MODULES=(virtio_pci virtio_blk ext4)
# Bump when the steps below change: a cached system of another recipe is rebuilt.
RECIPE="2 $GUEST_PACKAGES $KERNEL_PACKAGE ${NET_MODULE_DIRS[*]} ${NET_MODULES[*]} ${DISK_MODULES[*]}"

SYS="$VM_CACHE/$ARCH"
ROOTFS="$SYS/rootfs"

ensure_apt debootstrap debootstrap "$QEMU" "$QEMU_PKG" mke2fs e2fsprogs depmod kmod \
    cpio cpio dpkg-deb dpkg unzip unzip

# The module files (relative to the kernel tree DIR) that `modprobe NAME...` would load, in
# load order, without repeats. Needs DIR/lib/modules/KVER to be depmod-ed.
module_closure() {
    local dir="$1" kver="$2" m
    shift 2
    for m in "$@"; do
        # -C /dev/null: the host's modprobe.d options mean nothing for the guest.
        modprobe -C /dev/null -d "$dir" -S "$kver" --show-depends "$m" ||
            die "module $m is not in the kernel $kver"
    done | while read -r verb path _; do
        if [ "$verb" = insmod ]; then echo "${path#"$dir"/}"; fi
    done | awk '!seen[$0]++'
}

build_system() {
    local mirror kver kdir deb m
    mirror="$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
    [ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    [ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources"
    vlog "building the guest system in $SYS (once; cached)"
    rm -rf "$SYS"
    mkdir -p "$SYS"
    # First stage only: downloads every package (dependencies resolved) and unpacks the
    # base set, running nothing of the guest's architecture.
    nice -n "$HRNEO_NICE" debootstrap --foreign --arch "$ARCH" --variant=minbase \
        --include="$GUEST_PACKAGES,$KERNEL_PACKAGE" bookworm "$ROOTFS" "$mirror" >"$SYS/debootstrap.log" 2>&1 ||
        { tail -20 "$SYS/debootstrap.log" >&2; die "debootstrap failed"; }

    # The kernel package goes to its own tree, the rest into the rootfs. dpkg-deb -x would
    # replace the merged-/usr symlinks (/bin, /sbin, /lib) by directories.
    kdir="$SYS/kernel-tree"
    mkdir -p "$kdir"
    for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do
        case "$(basename "$deb")" in
            linux-image-*) dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir" ;;
            *) dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$ROOTFS" ;;
        esac
    done
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS/debootstrap"
    kver="$(ls "$kdir/lib/modules")"
    [ "$(wc -w <<<"$kver")" = 1 ] || die "expected one kernel in $KERNEL_PACKAGE, found: $kver"
    # arm64: an Image; Malta: a self-decompressing ELF, which qemu loads as it is.
    cp "$kdir/boot/vmlinuz-$kver" "$SYS/kernel"
    depmod -b "$kdir" "$kver"

    # What no maintainer script did: proc is a symlink after the first stage, no accounts,
    # no alternatives (iptables -> legacy, as on Entware).
    rm -rf "$ROOTFS/proc" && mkdir -p "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/run" "$ROOTFS/tmp"
    cp "$ROOTFS/usr/share/base-passwd/passwd.master" "$ROOTFS/etc/passwd"
    cp "$ROOTFS/usr/share/base-passwd/group.master" "$ROOTFS/etc/group"
    echo hrneo-vm >"$ROOTFS/etc/hostname"
    printf '127.0.0.1 localhost hrneo-vm\n::1 localhost ip6-localhost\n' >"$ROOTFS/etc/hosts"
    for m in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -sf xtables-legacy-multi "$ROOTFS/usr/sbin/$m"
    done

    # Modules: netfilter and friends with their dependencies, then the guest's own depmod.
    local names=("${NET_MODULES[@]}")
    for d in "${NET_MODULE_DIRS[@]}"; do
        while read -r m; do names+=("$m"); done < <(find "$kdir/lib/modules/$kver/$d" -name '*.ko*' \
            -printf '%f\n' | sed 's/\.ko.*$//')
    done
    mkdir -p "$ROOTFS/usr/lib/modules/$kver"
    cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$ROOTFS/usr/lib/modules/$kver/"
    module_closure "$kdir" "$kver" "${names[@]}" | while read -r m; do
        mkdir -p "$ROOTFS/$(dirname "$m")"
        cp "$kdir/$m" "$ROOTFS/$m"
    done
    depmod -b "$ROOTFS" "$kver"
    echo "$kver" >"$SYS/kver"

    # Every guest Python start would compile the stdlib under emulation: compile it here
    # (CPython 3.11's bytecode is the same on every architecture).
    local py
    py="$(command -v python3.11 || true)"
    if [ -n "$py" ]; then
        nice -n "$HRNEO_NICE" "$py" -m compileall -q -j0 "$ROOTFS/usr/lib/python3.11" \
            "$ROOTFS/usr/lib/python3/dist-packages" >/dev/null || vlog "compileall had errors (ignored)"
    else
        vlog "no python3.11 on the host: the guest compiles its stdlib itself (slower)"
    fi

    # The root disk: the tree itself, with room for what the tests write (-snapshot keeps
    # the cached image unchanged anyway).
    local mb
    mb=$(($(du -sm "$ROOTFS" | cut -f1) * 5 / 4 + 128))
    rm -f "$SYS/root.ext4"
    mke2fs -q -t ext4 -L hrneo-root -d "$ROOTFS" "$SYS/root.ext4" "${mb}M"

    # What the initramfs needs from the kernel package: the disk modules, in load order.
    rm -rf "$SYS/disk-modules" && mkdir -p "$SYS/disk-modules"
    module_closure "$kdir" "$kver" "${DISK_MODULES[@]}" | while read -r m; do
        cp "$kdir/$m" "$SYS/disk-modules/"
        basename "$m" >>"$SYS/disk-modules/load-order"
    done
    rm -rf "$kdir"
    # The image is the product; of the tree only busybox is needed again.
    cp "$ROOTFS/bin/busybox" "$SYS/busybox"
    rm -rf "$ROOTFS"
    echo "$RECIPE" >"$SYS/recipe"
}

if [ "$(cat "$SYS/recipe" 2>/dev/null)" != "$RECIPE" ]; then
    t=$(date +%s)
    build_system
    vlog "guest system ready in $(($(date +%s) - t)) s: $(du -sh "$SYS/root.ext4" | cut -f1) root image"
fi
KVER="$(cat "$SYS/kver")"

# The initramfs (made every run, it is small): busybox, the disk modules, scripts/vm/init.
initrd="$SYS/initrd.gz"
(
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/bin"
    cp "$SYS/busybox" "$tmp/bin/busybox"
    cp -r "$SYS/disk-modules" "$tmp/modules"
    install -m 755 "$VM_DIR/init" "$tmp/init"
    (cd "$tmp" && find . | cpio -o -H newc --quiet) | gzip -1 >"$initrd"
)

# ---------------------------------------------------------------- what is tested
RUN="$VM_CACHE/run-$ARCH"
PAYLOAD="$RUN/payload"
rm -rf "$RUN" && mkdir -p "$PAYLOAD/site" "$PAYLOAD/src" "$PAYLOAD/bin"
t_build=$(date +%s)
has_part() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

# The extension the Python parts import, unpacked (pip in the guest takes 30-90 s).
if has_part smoke || has_part kernel; then
    case "$ARCH" in
        arm64)
            if [ -z "$WHEEL" ]; then
                # The shipped wheel: the same script, target and profile as a release.
                vlog "building the aarch64 glibc wheel (scripts/build-wheels.sh)"
                rm -rf "$VM_CACHE/wheels" && mkdir -p "$VM_CACHE/wheels"
                HRNEO_SKIP_HOST=1 HRNEO_WHEEL_TARGETS=aarch64-unknown-linux-gnu \
                    "$HRNEO_ROOT/scripts/build-wheels.sh" "$VM_CACHE/wheels"
                WHEEL="$(ls "$VM_CACHE"/wheels/hrneo-*-manylinux_*_aarch64.whl)"
            fi ;;
        mipsel)
            # Test-only: Debian's mipsel userland is hard-float and glibc's loader refuses
            # the shipped soft-float objects. The same crate and profile, hard-float.
            t=mipsel-unknown-linux-gnu
            ensure_cross_tools
            w="$HRNEO_CROSS_CACHE/bin/zigcc-$t-hardfloat"
            mkdir -p "$HRNEO_CROSS_CACHE/bin"
            cat >"$w" <<WRAP
#!/bin/sh
export CARGO_ZIGBUILD_ZIG_COMMAND="$HRNEO_TOOLS_VENV/bin/python3"
export CARGO_ZIGBUILD_ZIG_COMMAND_ARGS='-m ziglang'
exec "$HRNEO_TOOLS_VENV/bin/cargo-zigbuild" zig cc -- -g -fno-sanitize=all -target mipsel-linux-gnueabihf.$HRNEO_GLIBC "\$@"
WRAP
            chmod +x "$w"
            vlog "building a hard-float mipsel glibc wheel (test only, not shipped)"
            rm -rf "$RUN/hf" && mkdir -p "$RUN/hf"
            (
                export "$(target_env "$t" LINKER)=$w" RUSTFLAGS=""
                # Its own target dir: std built with other flags than the shipped wheels'.
                export CARGO_TARGET_DIR="${HRNEO_CROSS_TARGET_DIR%/}-vm-hardfloat"
                cd "$HRNEO_ROOT"
                nice -n "$HRNEO_NICE" maturin build -q --profile router --target "$t" \
                    "${BUILD_STD[@]}" --compatibility linux --auditwheel skip -o "$RUN/hf"
            )
            WHEEL="$(ls "$RUN"/hf/hrneo-*.whl)" ;;
    esac
    unzip -q "$WHEEL" -d "$PAYLOAD/site"
    so="$(ls "$PAYLOAD"/site/hrneo/_core*.so)"
    if [ "$ARCH" = mipsel ]; then
        # Not `readelf | grep -q`: with pipefail, grep's early exit can fail the pipe.
        grep -q "FP ABI: Hard float" <<<"$(readelf -A "$so")" || die "$so: not hard-float"
    fi
    vlog "extension under test: $(basename "$WHEEL")"
fi

# The static musl test binaries of scripts/test-cross.sh (same flags, same target dir).
if has_part rust; then
    case "$ARCH" in
        arm64) t=aarch64-unknown-linux-musl machine=AArch64 ;;
        mipsel) t=mipsel-unknown-linux-musl machine=MIPS ;;
    esac
    ensure_cross_tools
    use_zig_linker "$t"
    unset "$(target_env "$t" RUSTFLAGS)"
    vlog "building the $t test binaries (as scripts/test-cross.sh)"
    (cd "$HRNEO_ROOT" && nice -n "$HRNEO_NICE" cargo test --tests --target "$t" "${BUILD_STD[@]}" \
        --no-run --message-format=json-render-diagnostics) |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' >"$RUN/test-bins"
    grep -q '/kernel_netlink-' "$RUN/test-bins" || die "no kernel_netlink test binary was built"
    while read -r bin; do
        grep -q "Machine: *$machine" <<<"$(readelf -h "$bin")" || die "$bin is not an $machine executable"
        cp "$bin" "$PAYLOAD/bin/"
    done <"$RUN/test-bins"
    echo "$HRNEO_ROOT" >"$PAYLOAD/manifest-dir"
fi

cp -r "$HRNEO_ROOT/tests" "$HRNEO_ROOT/pyproject.toml" "$PAYLOAD/src/"
find "$PAYLOAD/src" -name __pycache__ -prune -exec rm -rf {} +
cp "$VM_DIR/guest.sh" "$VM_DIR/smoke_vm.py" "$PAYLOAD/"
echo "${PARTS[*]}" >"$PAYLOAD/parts"
mkdir -p "$PAYLOAD/out"
# No journal: the host reads the results back with debugfs, which does not replay one.
mb=$(($(du -sm "$PAYLOAD" | cut -f1) + 64))
mke2fs -q -t ext4 -O ^has_journal -L hrneo-payload -d "$PAYLOAD" "$RUN/payload.ext4" "${mb}M"
rm -rf "$PAYLOAD"
t_build=$(($(date +%s) - t_build))

# ---------------------------------------------------------------- boot
timeout_s="${HRNEO_VM_TIMEOUT:-}"
if [ -z "$timeout_s" ]; then
    timeout_s=240
    for p in "${PARTS[@]}"; do
        case "$ARCH:$p" in
            *:smoke) timeout_s=$((timeout_s + 120)) ;;
            arm64:kernel) timeout_s=$((timeout_s + 900)) ;;
            mipsel:kernel) timeout_s=$((timeout_s + 2400)) ;;
            *:rust) timeout_s=$((timeout_s + 300)) ;;
        esac
    done
fi
vlog "booting Debian's $KVER under $QEMU (parts: ${PARTS[*]}; timeout ${timeout_s} s)"
t_boot=$(date +%s)
rc=0
# -no-reboot and panic=-1: a crash ends qemu at once. No network (-nic none): nothing in
# the guest can reach out, and no option ROM is needed.
timeout --kill-after=10 "$timeout_s" nice -n "$HRNEO_NICE" "$QEMU" "${QEMU_ARGS[@]}" \
    -nic none -display none -monitor none -serial stdio -no-reboot \
    -kernel "$SYS/kernel" -initrd "$initrd" \
    -append "console=$CONSOLE panic=-1 quiet loglevel=3" \
    -drive "file=$SYS/root.ext4,format=raw,if=none,id=root,snapshot=on" \
    -device virtio-blk-pci,drive=root,serial=hrneo-root \
    -drive "file=$RUN/payload.ext4,format=raw,if=none,id=payload" \
    -device virtio-blk-pci,drive=payload,serial=hrneo-payload \
    </dev/null 2>&1 | sed -u 's/\r$//' | tee "$RUN/console.log" || rc=$?
t_run=$(($(date +%s) - t_boot))
# The guest's logs (pytest's junit XML, ...) for a closer look.
debugfs -R "rdump /out $RUN" "$RUN/payload.ext4" >/dev/null 2>&1 || true

# ---------------------------------------------------------------- verdict
report="$(grep -a '^HRNEO-VM ' "$RUN/console.log" || true)"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then vlog "qemu did not finish within $timeout_s s"; fi
vlog "results (console: $RUN/console.log):"
grep -v '^HRNEO-VM START ' <<<"$report" | sed 's/^HRNEO-VM /  /' >&2 || true
ok=1
grep -q '^HRNEO-VM RESULT PASS' <<<"$report" || ok=0
for p in "${PARTS[@]}"; do
    grep -q "^HRNEO-VM PART $p PASS" <<<"$report" || { ok=0; vlog "part $p: no PASS"; }
done
boot="$(sed -n 's/^HRNEO-VM BEGIN .*uptime=\([0-9.]*\).*/\1/p' <<<"$report")"
vlog "times: system $((t_boot - t_start - t_build)) s, builds ${t_build} s, boot ${boot:-?} s, qemu total ${t_run} s"
[ "$ok" = 1 ] || die "$ARCH: FAILED on the real kernel"
vlog "$ARCH: PASS on Debian's $KVER kernel: ${PARTS[*]} ($(($(date +%s) - t_start)) s in all)"
