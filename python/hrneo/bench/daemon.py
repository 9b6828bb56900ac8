"""`python -m hrneo.bench daemon`: the whole daemon, end to end, on namespaced hosts.

    wan (answers from port 53) --veth-- router (hrneo run, NAT) --veth-- client

What is measured, all in one run on this machine:

- **throughput**: pre-built DNS answers (each with 4 AAAA records of addresses never
  seen before) are replayed from the wan host's port 53 through the router at a fixed
  rate for a bounded count; afterwards the router's set must hold every address.
  The highest rate tried with 0 addresses lost is reported (target >= 20,000/s).
- Both are measured for a policy with `reconnect: true` (each wake-up with new
  addresses runs one conntrack dump, whose kernel cost grows with the host's
  conntrack hash size, printed too) and one with `reconnect: false`.
- **latency**: at 1,000 answers/s, one answer with a unique address at a time: the
  clock starts at `sendto()` on the wan host and stops when `ipset_test()` (netlink,
  polled back to back from the router namespace) first sees the address. This
  includes the forward path and one netlink round trip of polling granularity, so it
  over-states the daemon's own time slightly (target p99 < 1 ms).
- **watchlist**: in a fresh subprocess, loading a config whose list file holds 100,000
  domains and compiling the matcher: wall time and RSS growth (VmRSS of
  /proc/self/status) (targets <= 1 s, <= 30 MB).
- **baseline**: the old design in the same namespaces, for a short bounded run:
  `tcpdump -l` text parsed line by line, one `ipset add` process per address.

Measure a RELEASE build of the core (`maturin develop --release`): a debug build is
several times slower. The build kind is printed (guessed from the extension file: the
release profile strips symbols and debug info, a debug build keeps `.debug_info`).

Every address is a documentation address (2001:db8::/32, 192.0.2.0/24, 198.51.100.0/24).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hrneo.bench.netns import BenchNetns as Netns

WAN_ADDR = "198.51.100.2"
CLIENT_ADDR = "192.0.2.2"
SET4 = "hr_bench"
SET6 = "hr_bench6"
NF_SET4 = "hr_bench_nf"
NF_SET6 = "hr_bench_nf6"
BASE_SET6 = "hr_base6"
GROUP = 100


# ---------------------------------------------------------------- namespaces


class Hosts:
    """wan -- router -- client, the router masquerading towards wan."""

    def __init__(self) -> None:
        tag = f"hrneo-b{os.getpid()}"
        self.made: list[Netns] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="hrneo-bench-"))
        self.daemon: subprocess.Popen[bytes] | None = None
        try:
            self.wan = self._ns(f"{tag}-w")
            self.router = self._ns(f"{tag}-r")
            self.client = self._ns(f"{tag}-c")
            self._link(self.client, "c0", "192.0.2.2/26", self.router, "r0", "192.0.2.1/26")
            self._link(self.router, "r1", "198.51.100.1/24", self.wan, "w0", f"{WAN_ADDR}/24")
            self.client.sh("ip route add default via 192.0.2.1")
            self.wan.sh("ip route add 192.0.2.0/26 via 198.51.100.1")
            self.router.sh("sysctl -qw net.ipv4.ip_forward=1")
            self.router.sh("iptables -w -t nat -A POSTROUTING -o r1 -j MASQUERADE")
            # The client only swallows the answers: no ICMP storm back through the router.
            self.client.sh("iptables -w -A INPUT -p udp --sport 53 -j DROP")
        except BaseException:
            self.close()
            raise

    def _ns(self, name: str) -> Netns:
        ns = Netns(name)
        self.made.append(ns)
        return ns

    @staticmethod
    def _link(a: Netns, da: str, aa: str, b: Netns, db: str, ab: str) -> None:
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                da,
                "netns",
                a.name,
                "type",
                "veth",
                "peer",
                "name",
                db,
                "netns",
                b.name,
            ],
            check=True,
        )
        for ns, dev, addr in ((a, da, aa), (b, db, ab)):
            ns.sh(f"ip addr add {addr} dev {dev}")
            ns.sh(f"ip link set {dev} up")

    def start_daemon(self, python: str) -> None:
        """hrneo run in the router, one policy watching bench.example.org."""
        cfg = self.tmp / "hrneo.yaml"
        cfg.write_text(
            textwrap.dedent(f"""\
            nflog_group: {GROUP}
            control_socket: {self.tmp / "hrneo.sock"}
            firewall:
              manage_rules: true
              dns_chains: [FORWARD]
              ipv6: true
            policies:
              - name: bench
                ipset: {SET4}
                ipset6: {SET6}
                timeout: 0
                reconnect: true
                maxelem: 1048576
                domains: [bench.example.org]
              - name: noflush
                ipset: {NF_SET4}
                ipset6: {NF_SET6}
                timeout: 0
                reconnect: false
                maxelem: 1048576
                domains: [noflush.example.org]
            """)
        )
        self.log_path = self.tmp / "daemon.log"
        with open(self.log_path, "wb") as log:
            self.daemon = subprocess.Popen(
                self.router.argv(
                    [
                        python,
                        "-m",
                        "hrneo",
                        "run",
                        "--config",
                        str(cfg),
                        # per-address INFO lines would measure the terminal
                        "--log-level",
                        "WARNING",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited:\n{self.log_path.read_text()}")
            if "NFLOG" in self.router.sh("iptables -w -S FORWARD", check=False) and self.router.sh(
                f"ipset list -n {SET6}", check=False
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up:\n{self.log_path.read_text()}")

    def stop_daemon(self) -> int | None:
        """SIGTERM the daemon; its exit code."""
        if self.daemon is None:
            return None
        proc, self.daemon = self.daemon, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def close(self) -> None:
        """Stop everything, delete the namespaces and temp files."""
        with contextlib.suppress(Exception):
            self.stop_daemon()
        for ns in self.made:
            ns.delete()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- DNS answers


def _name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def answer(txid: int, qname: str, addrs: Sequence[str]) -> bytes:
    """A DNS response for qname with one A/AAAA record per address (name compressed)."""
    v6 = ":" in addrs[0]
    qtype = 28 if v6 else 1
    out = struct.pack("!HHHHHH", txid, 0x8180, 1, len(addrs), 0, 0)
    out += _name(qname) + struct.pack("!HH", qtype, 1)
    for a in addrs:
        raw = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, a)
        out += struct.pack("!HHHIH", 0xC00C, qtype, 1, 300, len(raw)) + raw
    return out


def v6_address(round_no: int, i: int, k: int) -> str:
    """A unique documentation address for answer i, record k of a round."""
    n = i * 4 + k
    return (
        f"2001:db8:{0xB000 + round_no:x}:{n >> 32 & 0xFFFF:x}:{n >> 16 & 0xFFFF:x}::{n & 0xFFFF:x}"
    )


def replay(sock: socket.socket, packets: Sequence[bytes], rate: float) -> float:
    """Send every packet to the client's port 5353.. at `rate`/s (paced in bursts); seconds taken."""
    dst = (CLIENT_ADDR, 5353)
    burst = max(1, int(rate / 1000))  # about one burst per millisecond
    start = time.perf_counter()
    for j in range(0, len(packets), burst):
        due = start + j / rate
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            if due - now > 0.0005:
                time.sleep(due - now - 0.0003)
        for p in packets[j : j + burst]:
            try:
                sock.sendto(p, dst)
            except BlockingIOError:
                time.sleep(0.0001)
                sock.sendto(p, dst)
    return time.perf_counter() - start


def set_members(ns: Netns, set_name: str) -> set[str]:
    """Members of a set inside a namespace (ipset save)."""
    out = ns.sh(f"ipset save {set_name}", check=False)
    found = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "add":
            found.add(parts[2].split("/")[0])
    return found


def wait_settled(count: Callable[[], int], want: int, timeout: float) -> int:
    """Poll until count() reaches want, or stops growing for a second, or timeout."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        if n >= want:
            return n
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 1.0:
            return n
        time.sleep(0.1)
    return count()


# ---------------------------------------------------------------- the measurements


@dataclass
class Result:
    """One figure with its target."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def bench_throughput(
    h: Hosts, sock: socket.socket, rates: Sequence[int], seconds: float, reconnect: bool
) -> Result:
    """Highest replay rate with every address in the set afterwards."""
    zone, set6 = ("bench.example.org", SET6) if reconnect else ("noflush.example.org", NF_SET6)
    best = 0
    tried: dict[str, Any] = {}
    for rate in rates:
        _ROUNDS[0] += 1
        round_no = _ROUNDS[0]  # a fresh address range per round
        # Each rate starts from an empty set: no maxelem hit, no dependence on set size.
        h.router.sh(f"ipset flush {set6}")
        n = max(100, min(int(rate * seconds), 200_000))
        packets = [
            answer(random.randrange(65536), f"q{i}.{zone}",
                   [v6_address(round_no, i, k) for k in range(4)])
            for i in range(n)
        ]  # fmt: skip
        want = 4 * n
        took = replay(sock, packets, rate)
        prefix = f"2001:db8:{0xB000 + round_no:x}:"

        def present(prefix: str = prefix) -> int:
            return sum(1 for a in set_members(h.router, set6) if a.startswith(prefix))

        got = wait_settled(present, want, timeout=30)
        lost = want - got
        achieved = n / took if took > 0 else 0.0
        tried[str(rate)] = {"answers": n, "sent_per_s": round(achieved), "lost": lost}
        print(
            f"  throughput (reconnect {reconnect}): {n} answers at {achieved:,.0f}/s -> "
            f"{lost} of {want} addresses lost",
            file=sys.stderr,
        )
        if lost == 0:
            best = max(best, int(achieved))
        else:
            break
    return Result(
        f"answers/s, 4 new addresses each, 0 lost, reconnect {str(reconnect).lower()}",
        best,
        "/s",
        ">= 20,000",
        best >= 20_000,
        note="highest replay rate tried with nothing lost",
        extra={"rounds": tried},
    )


_ROUNDS = [0]
_LAT_RUNS = [0]


def bench_latency(h: Hosts, sock: socket.socket, count: int, reconnect: bool) -> Result:
    """sendto() on wan -> ipset_test() true in the router, one answer at a time at 1,000/s."""
    from hrneo import IpsetSession

    zone, set6 = ("bench.example.org", SET6) if reconnect else ("noflush.example.org", NF_SET6)
    title = f"latency p99 answer -> in set @1,000/s, reconnect {str(reconnect).lower()}"
    lat: list[float] = []
    missed = 0
    _LAT_RUNS[0] += 1
    with h.router.enter(), IpsetSession() as ipset:
        for i in range(count):
            addr = f"2001:db8:{0xC000 + _LAT_RUNS[0]:x}::{i + 1:x}"  # never seen before
            pkt = answer(i & 0xFFFF, f"l{i}.{zone}", [addr])
            slot = time.perf_counter() + 0.001  # 1,000 answers/s
            t0 = time.perf_counter()
            sock.sendto(pkt, (CLIENT_ADDR, 5353))
            deadline = t0 + 0.2
            while True:
                if ipset.test(set6, addr):
                    lat.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() > deadline:
                    missed += 1
                    break
            while time.perf_counter() < slot:
                pass
    if not lat:
        return Result(title, None, "ms", "< 1 ms", False, note="none reached the set")
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return Result(
        title,
        round(p99, 3),
        "ms",
        "< 1 ms",
        p99 < 1.0 and missed == 0,
        note=f"p50 {p50:.3f} ms, max {lat[-1] * 1000:.3f} ms, {missed} missed",
        extra={"p50_ms": round(p50, 3), "samples": len(lat), "missed": missed},
    )


def bench_flush_cost(h: Hosts, runs: int = 20) -> Result:
    """What one ConntrackFlusher.flush costs in the router (an almost empty table): the
    kernel walks its whole conntrack hash for a dump, shared by every namespace."""
    from hrneo import _core

    with h.router.enter():
        flusher = _core.ConntrackFlusher()
        took = []
        for i in range(runs):
            t0 = time.perf_counter()
            flusher.flush([f"2001:db8:dead::{i + 1:x}"])
            took.append(time.perf_counter() - t0)
    took.sort()
    try:
        buckets = Path("/proc/sys/net/netfilter/nf_conntrack_buckets").read_text().strip()
    except OSError:
        buckets = "?"
    return Result(
        "one conntrack flush (dump) in the router, median",
        round(took[len(took) // 2] * 1000, 3),
        "ms",
        "",
        None,
        note=f"nf_conntrack_buckets {buckets}",
    )


WATCHLIST_PROBE = r"""
import sys, time
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
from hrneo.config import load_config
from hrneo.watchlist import Watchlist
before = rss_kb()
t0 = time.perf_counter()
cfg, _warnings = load_config(sys.argv[1])
wl = Watchlist.from_config(cfg)
took = time.perf_counter() - t0
after = rss_kb()
assert wl.match("www.d99999.example.com") is not None
print(took, (after - before) / 1024, len(wl))
"""


def bench_watchlist(python: str, domains: int, tmp: Path) -> list[Result]:
    """Load + compile a 100,000-domain list in a fresh interpreter."""
    lst = tmp / "big.list"
    lst.write_text("".join(f"d{i}.example.com\n" for i in range(domains)))
    cfg = tmp / "big.yaml"
    cfg.write_text(
        f"policies:\n  - name: big\n    ipset: hr_big\n    domain_files: [{lst}]\n"
        "firewall: {manage_rules: false}\n"
    )
    out = subprocess.run(
        [python, "-c", WATCHLIST_PROBE, str(cfg)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if out.returncode != 0:
        return [
            Result(
                f"watchlist compile, {domains:,} domains",
                None,
                "s",
                "<= 1 s",
                False,
                note=out.stderr.strip().splitlines()[-1] if out.stderr else "failed",
            )
        ]
    took, rss, size = out.stdout.split()
    return [
        Result(
            f"watchlist load+compile, {int(size):,} domains",
            round(float(took), 3),
            "s",
            "<= 1 s",
            float(took) <= 1.0,
        ),
        Result(
            f"watchlist RSS growth, {int(size):,} domains",
            round(float(rss), 1),
            "MB",
            "<= 30 MB",
            float(rss) <= 30.0,
        ),
    ]


BASELINE = r"""
import re, subprocess, sys, time
# The old design: tcpdump's text, a regex, one `ipset add` process per address.
set_name, iface, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
rx = re.compile(r"\bAAAA? ([0-9a-fA-F:.]+)")
td = subprocess.Popen(["tcpdump", "-l", "-n", "-i", iface, "udp and src port 53"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
print("ready", flush=True)
added = 0
deadline = time.monotonic() + float(sys.argv[4])
while added < want and time.monotonic() < deadline:
    line = td.stdout.readline()
    if not line:
        break
    for addr in rx.findall(line):
        subprocess.run(["ipset", "add", "-exist", set_name, addr], check=False)
        added += 1
td.terminate()
print("done", added, flush=True)
"""


def bench_baseline(h: Hosts, sock: socket.socket, python: str, answers: int) -> Result:
    """Replay `answers` answers at once; rate = answers / time until their last address is in."""
    h.router.sh(f"ipset create {BASE_SET6} hash:net family inet6 maxelem 65536 -exist")
    want = answers * 4
    proc = subprocess.Popen(
        h.router.argv([python, "-c", BASELINE, BASE_SET6, "r0", str(want), "60"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        time.sleep(1.0)  # tcpdump attaches after it printed nothing: give it its start-up
        packets = [
            answer(
                i, f"b{i}.base.example.net", [f"2001:db8:ba5e::{i * 4 + k + 1:x}" for k in range(4)]
            )
            for i in range(answers)
        ]
        t0 = time.perf_counter()
        replay(sock, packets, rate=1000)
        got = wait_settled(lambda: len(set_members(h.router, BASE_SET6)), want, timeout=60)
        took = time.perf_counter() - t0
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        h.router.sh(f"ipset destroy {BASE_SET6}", check=False)
    rate = (got / 4) / took if took > 0 else 0.0
    return Result(
        "baseline tcpdump + ipset add: answers/s",
        round(rate, 1),
        "/s",
        "(~30)",
        None,
        note=f"{got} of {want} addresses in {took:.1f} s",
    )


# ---------------------------------------------------------------- main


def daemon_counters(h: Hosts, python: str) -> Result:
    """The daemon's own view after the load: reader drops (kernel buffer overflow)."""
    out = subprocess.run(
        [python, "-m", "hrneo", "status", "--json", "--socket", str(h.tmp / "hrneo.sock")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    try:
        st = json.loads(out.stdout)
    except ValueError:
        return Result("daemon status after load", None, "", note="status failed")
    keys = ("answers", "dropped", "malformed", "commit_errors", "flushed")
    note = ", ".join(f"{k} {st.get(k)}" for k in keys)
    return Result(
        "packets the kernel dropped (reader overflow)",
        st.get("dropped"),
        "",
        "",
        None,
        note=note,
        extra={k: st.get(k) for k in keys},
    )


def _elf_sections(data: bytes) -> set[str]:
    """Section names of a 64-bit little-endian ELF file."""
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    names = set()
    for i in range(shnum):
        name_off = struct.unpack_from("<I", data, shoff + i * shentsize)[0]
        end = data.index(b"\0", strtab_off + name_off)
        names.add(data[strtab_off + name_off : end].decode(errors="replace"))
    return names


def core_build(python: str) -> Result:
    """Which hrneo._core the interpreter loads, and whether it looks like a debug build."""
    out = subprocess.run(
        [python, "-c", "import hrneo._core as c; print(c.__file__)"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    path = Path(out.stdout.strip())
    try:
        data = path.read_bytes()
        sections = _elf_sections(data)
    except (OSError, ValueError, struct.error):
        return Result("hrneo._core build", None, "", note="not found or not ELF")
    kind = (
        "debug (has .debug_info): figures are pessimistic"
        if ".debug_info" in sections
        else "release (no debug info)"
    )
    return Result("hrneo._core build", round(len(data) / 1e6, 2), "MB", "", None, note=kind)


def _table(results: Sequence[Result]) -> str:
    rows = [("measurement", "figure", "target", "ok", "note")]
    for r in results:
        fig = "n/a" if r.value is None else f"{r.value:,} {r.unit}"
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        rows.append((r.name, fig, r.target, ok, r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Run the daemon benchmark; print a table (or JSON). Exit 0 when it ran."""
    p = argparse.ArgumentParser(
        prog="python -m hrneo.bench daemon",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller counts (about 30 s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs hrneo")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--parts",
        default="throughput,latency,watchlist",
        help="comma-separated subset of throughput,latency,watchlist (default: all)",
    )
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if os.geteuid() != 0:
        print("hrneo.bench daemon: needs root (network namespaces, ipset)", file=sys.stderr)
        return 2
    for tool in ("ip", "ipset", "iptables", "tcpdump"):
        if shutil.which(tool) is None:
            print(f"hrneo.bench daemon: needs `{tool}`", file=sys.stderr)
            return 2

    rates = [5_000, 10_000, 20_000] if args.quick else [5_000, 10_000, 20_000, 30_000, 40_000]
    seconds = 1.0 if args.quick else 3.0
    results: list[Result] = [core_build(args.python)]
    print(f"core: {results[0].note}", file=sys.stderr)
    h = Hosts()
    try:
        with h.wan.enter():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((WAN_ADDR, 53))
        if not args.skip_baseline:
            print("baseline (old design)...", file=sys.stderr)
            results.append(bench_baseline(h, sock, args.python, 20 if args.quick else 60))
        print("starting the daemon...", file=sys.stderr)
        h.start_daemon(args.python)
        # Latency first: after the throughput runs the sets hold ~1M entries, and the
        # kernel's ipset/hash work then dominates (p50 grows from ~0.1 ms to ~12 ms).
        if "latency" in parts:
            print("latency...", file=sys.stderr)
            for reconnect in (True, False):
                results.append(bench_latency(h, sock, 500 if args.quick else 3000, reconnect))
        if "throughput" in parts:
            print("throughput...", file=sys.stderr)
            for reconnect in (True, False):
                results.append(bench_throughput(h, sock, rates, seconds, reconnect))
        results.append(bench_flush_cost(h))
        results.append(daemon_counters(h, args.python))
        alive = h.daemon is not None and h.daemon.poll() is None
        code = h.stop_daemon()
        results.append(
            Result(
                "daemon alive after load, SIGTERM exit code",
                None if code is None else code,
                "",
                "0",
                alive and code == 0,
            )
        )
        if "watchlist" in parts:
            print("watchlist...", file=sys.stderr)
            results += bench_watchlist(args.python, 100_000, h.tmp)
        sock.close()
    finally:
        h.close()

    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
