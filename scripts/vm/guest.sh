#!/bin/bash
# PID 1 of the test guest of scripts/test-vm.sh (the initramfs switch_roots to it).
# Runs the parts named in /hrneo-vm/parts and reports on the serial console, in lines the
# host reads:
#   HRNEO-VM BEGIN ...                       once, with the guest's uptime (boot time)
#   HRNEO-VM PART <name> PASS|FAIL k=v ...   one per part, with counts and seconds
#   HRNEO-VM RESULT PASS|FAIL ...            last
# A part that ran nothing, or skipped a test, is a FAIL: on a real kernel everything runs.
# Then the guest powers off (PID 1 exiting would panic; panic=-1 -no-reboot ends qemu too).
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp
P=/hrneo-vm
OUT=$P/out

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns /dev/shm /dev/pts "$OUT"
mount -t tmpfs tmpfs /dev/shm
# devtmpfs has no /dev/fd, /dev/stdin...: udev would make them.
ln -sfn /proc/self/fd /dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -sfn "/proc/self/fd/${i%%:*}" "/dev/${i#*:}"; done
exec </dev/null

say() { echo "HRNEO-VM $*"; }
now_ms() { date +%s%3N; }
secs() { local ms=$(($(now_ms) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
finish() {
    sync
    echo o >/proc/sysrq-trigger
    sleep 5
    echo b >/proc/sysrq-trigger
    sleep 60
}
trap finish EXIT

say "BEGIN arch=$(uname -m) kernel=$(uname -r) cpus=$(nproc) mem_mb=$(($(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) / 1024)) uptime=$(cut -d' ' -f1 /proc/uptime)"
hostname hrneo-vm
ip link set lo up

# The manifest dir compiled into the Rust tests (fixtures are read from there).
if [ -s $P/manifest-dir ]; then
    md="$(cat $P/manifest-dir)"
    mkdir -p "$(dirname "$md")" && ln -sfn $P/src "$md"
fi

failed=()
results=()
# Modules loaded up front (the kernel would load most on demand, through kmod).
t=$(now_ms)
if modprobe -a ip_set ip_set_hash_ip ip_set_hash_net xt_set nfnetlink_log xt_NFLOG \
    nfnetlink_queue xt_NFQUEUE nf_conntrack nf_conntrack_netlink xt_conntrack xt_mark \
    xt_connmark xt_comment xt_multiport iptable_filter iptable_mangle iptable_nat iptable_raw \
    ip6table_filter ip6table_mangle ip6table_nat ip6table_raw xt_MASQUERADE veth dummy; then
    # With 256 MiB (mipsel) the table defaults to 4096 entries: too few for the tests.
    sysctl -qw net.netfilter.nf_conntrack_max=65536
    say "PART modules PASS seconds=$(secs "$t")"
else
    say "PART modules FAIL"
    failed+=(modules)
fi
export PYTHONPATH=$P/site PYTHONUNBUFFERED=1

# part_smoke: the wheel's core against this kernel (scripts/vm/smoke_vm.py), in a
# namespace of its own.
part_smoke() {
    unshare --net -- python3 $P/smoke_vm.py 2>&1 | tee $OUT/smoke.log
    local rc=${PIPESTATUS[0]} n
    n=$(grep -c '^ok: ' $OUT/smoke.log)
    if [ "$rc" -eq 0 ] && grep -q '^smoke test passed' $OUT/smoke.log; then
        echo "PASS checks=$n"
    else
        echo "FAIL checks_passed=$n exit=$rc"
    fi
}

# part_kernel: the project's kernel test suite (tests/kernel) with Debian's pytest.
# CI=true makes conftest fail a test whose requirements are missing instead of skipping.
part_kernel() {
    local rc
    (cd $P/src && CI=true python3 -m pytest tests/kernel -rs -q -p no:cacheprovider \
        --junitxml=$OUT/kernel.xml) 2>&1 | tee $OUT/kernel.log
    rc=${PIPESTATUS[0]}
    python3 - "$OUT/kernel.xml" "$rc" <<'PY'
import sys
import xml.etree.ElementTree as ET

t = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
try:
    for ts in ET.parse(sys.argv[1]).getroot().iter("testsuite"):
        for k in t:
            t[k] += int(ts.get(k, 0))
except (OSError, ET.ParseError) as e:
    print(f"FAIL no_report={type(e).__name__}")
    sys.exit()
passed = t["tests"] - t["failures"] - t["errors"] - t["skipped"]
ok = sys.argv[2] == "0" and t["tests"] > 0 and passed == t["tests"]
print(f"{'PASS' if ok else 'FAIL'} passed={passed} failed={t['failures']} "
      f"errors={t['errors']} skipped={t['skipped']}")
PY
}

# part_rust: the static musl test binaries (the shipped soft-float code path on mipsel).
# HRNEO_REQUIRE_KERNEL=1 turns a skip of kernel_netlink into a failure, and every test it
# lists must also have said "RAN".
part_rust() {
    local bin name rc=0 passed=0 nfailed=0 ignored=0 filtered=0 listed=0 ran=0 n log a b c d
    for bin in "$P"/bin/*; do
        name=$(basename "$bin")
        log=$OUT/rust-$name.log
        echo "--- $name"
        # The fuzz test is pure computation, ~2 min here, 20 s under qemu-user where
        # scripts/test-cross.sh runs it.
        (cd $P/src && HRNEO_REQUIRE_KERNEL=1 "$bin" --test-threads=1 --skip fuzz_mutations) 2>&1 |
            tee "$log"
        [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
        n=$(sed -n 's/^test result: .*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored; [0-9]* measured; \([0-9]*\) filtered out.*/\1 \2 \3 \4/p' "$log")
        [ -n "$n" ] || { rc=1; continue; }
        read -r a b c d <<<"$n"
        passed=$((passed + a)) nfailed=$((nfailed + b)) ignored=$((ignored + c)) filtered=$((filtered + d))
        if [[ "$name" == kernel_netlink-* ]]; then
            listed=$("$bin" --list 2>/dev/null | grep -c ': test$')
            # libtest may print the marker after "test NAME ... " on the same line.
            ran=$(grep -o 'hrneo-kernel-test: RAN [a-z0-9_]*' "$log" | sort -u | wc -l)
        fi
    done
    if [ "$rc" -eq 0 ] && [ "$passed" -gt 0 ] && [ "$listed" -gt 0 ] && [ "$ran" -eq "$listed" ]; then
        echo "PASS passed=$passed failed=$nfailed ignored=$ignored filtered=$filtered kernel_tests_ran=$ran/$listed"
    else
        echo "FAIL passed=$passed failed=$nfailed ignored=$ignored filtered=$filtered kernel_tests_ran=$ran/$listed"
    fi
}

read -r -a parts <$P/parts
for part in "${parts[@]}"; do
    say "START $part"
    t=$(now_ms)
    res="$("part_$part" | tee /dev/stderr | tail -1)"
    read -r verdict counts <<<"$res"
    [ "$verdict" = PASS ] || { verdict=FAIL; failed+=("$part"); }
    say "PART $part $verdict ${counts:-} seconds=$(secs "$t")"
    results+=("$part:$verdict")
done 2>&1

if [ ${#failed[@]} -eq 0 ]; then
    say "RESULT PASS ${results[*]}"
else
    say "RESULT FAIL failed=${failed[*]}"
fi
