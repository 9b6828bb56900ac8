"""``python -m hrneo.bench core``: the compiled core against the programs it replaces.

Runs as root inside a private network namespace that it creates and removes,
so the host's sets and conntrack table are never touched. Measures, in one run:

- ``IpsetBatch`` add+commit of 1, 10 and 1000 new addresses, against
  ``ipset add`` once per address and ``ipset restore`` of the same lines
  (``NftSetBatch`` against ``nft add element``: :mod:`hrneo.bench.nft`);
- ``ConntrackFlusher.flush`` of a few addresses among 10,000 entries, against
  ``conntrack -D -d ADDR`` per address;
- ``parse_packet`` throughput on a DNS answer packet built here.

Figures only: nothing here fails on speed. Iteration counts are fixed, so the
run time is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import math
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Callable

from hrneo.testing.netns import Netns

log = logging.getLogger("hrneo.bench.core")

SET4 = "hrneo_bench4"
SET6 = "hrneo_bench6"
SRC4, GW4 = "192.0.2.1", "192.0.2.2"
GW_MAC = "02:00:00:00:00:02"  # nobody owns it: packets leave and vanish
CT_BACKGROUND = 10_000
CT_TARGETS = ("203.0.113.1", "203.0.113.2", "203.0.113.3")
CT_PORTS_PER_TARGET = 5
PARTS = ("ipset", "nftables", "conntrack", "parse")


@dataclass
class Baseline:
    """The same work done the old way, in the same run."""

    name: str
    median_ms: float
    speedup: float  # baseline median / our median


@dataclass
class Result:
    """One measured line: ours, with the baselines beside it."""

    name: str
    unit: str  # "ms" (lower is better) or "pkt/s" (higher is better)
    median: float
    p99: float  # for ms: the 99th percentile; for pkt/s: the slowest 1 % of rounds
    samples: int
    baselines: list[Baseline] = field(default_factory=list)
    target: str | None = None
    target_met: bool | None = None
    note: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def timed_ms(
    runs: int, prepare: Callable[[int], object], action: Callable[[object], object]
) -> list[float]:
    """`runs` timings of `action(prepare(i))`, in ms; `prepare` is not timed."""
    out: list[float] = []
    for i in range(runs):
        arg = prepare(i)
        t0 = time.perf_counter_ns()
        action(arg)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> None:
    """Run a program (inside the namespace the calling thread is in)."""
    proc = subprocess.run(
        list(argv), check=False, input=stdin, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


# ------------------------------------------------------------------ ipset


def fresh_addresses(family: int, size: int, iteration: int) -> list[str]:
    """`size` distinct documentation addresses; different per iteration where room allows."""
    if family == 4:
        pool = [
            str(a)
            for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
            for a in ipaddress.ip_network(net)
        ]
        start = (iteration * size) % len(pool)
        return [pool[(start + k) % len(pool)] for k in range(size)]
    base = int(ipaddress.IPv6Address("2001:db8:b::"))
    return [str(ipaddress.IPv6Address(base + (iteration << 16) + k + 1)) for k in range(size)]


def bench_ipset(quick: bool) -> list[Result]:
    """IpsetBatch add+commit vs `ipset add` per address vs `ipset restore`."""
    from hrneo import IpsetBatch

    run(["ipset", "create", SET4, "hash:ip", "family", "inet", "maxelem", "65536"])
    run(["ipset", "create", SET6, "hash:ip", "family", "inet6", "maxelem", "65536"])
    scale = 10 if quick else 1
    # (size, family, ours, restore, one add per address): IPv4 documentation space
    # holds 768 addresses, so the 1000-address case uses IPv6.
    plan = [
        (1, 4, 300, 40, 40),
        (10, 4, 300, 40, 15),
        (1000, 6, 40, 15, 3),
    ]
    results: list[Result] = []
    for size, family, n_ours, n_restore, n_add in plan:
        name = SET4 if family == 4 else SET6
        batch = IpsetBatch(name)
        not_new = 0

        def prepare(i: int, size: int = size, family: int = family, name: str = name) -> object:
            run(["ipset", "flush", name])
            return fresh_addresses(family, size, i)

        def ours(addrs: object, batch: IpsetBatch = batch) -> None:
            nonlocal not_new
            assert isinstance(addrs, list)
            batch.extend(addrs)
            new = batch.commit()
            not_new += len(addrs) - len(new)

        def restore(addrs: object, name: str = name) -> None:
            assert isinstance(addrs, list)
            run(["ipset", "restore"], stdin="".join(f"add {name} {a}\n" for a in addrs))

        def add_each(addrs: object, name: str = name) -> None:
            assert isinstance(addrs, list)
            for a in addrs:
                run(["ipset", "add", name, a])

        t_ours = timed_ms(max(3, n_ours // scale), prepare, ours)
        t_restore = timed_ms(max(2, n_restore // scale), prepare, restore)
        t_add = timed_ms(max(1, n_add // scale), prepare, add_each)
        fam = "inet" if family == 4 else "inet6"
        note = f"{not_new} addresses were not reported new" if not_new else ""
        med = statistics.median(t_ours)
        baselines = [
            Baseline(b_name, statistics.median(b), statistics.median(b) / med)
            for b_name, b in (("ipset restore", t_restore), ("ipset add per address", t_add))
        ]
        target: str | None = None
        met: bool | None = None
        if size == 10:
            target = ">= 20x faster than ipset restore"
            met = baselines[0].speedup >= 20
        results.append(
            Result(
                name=f"IpsetBatch commit {size} new ({fam})",
                unit="ms",
                median=med,
                p99=percentile(t_ours, 99),
                samples=len(t_ours),
                baselines=baselines,
                target=target,
                target_met=met,
                note=note,
            )
        )
    run(["ipset", "destroy", SET4], check=False)
    run(["ipset", "destroy", SET6], check=False)
    return results


# ------------------------------------------------------------------ conntrack


def setup_conntrack(ns: Netns) -> None:
    """Routes out of a veth to a neighbour nobody answers for, and conntrack on."""
    ns.sh("ip link add v0 type veth peer name v1")
    ns.sh(f"ip addr add {SRC4}/24 dev v0")
    ns.sh("ip link set v0 up")
    ns.sh("ip link set v1 up")
    ns.sh(f"ip neigh add {GW4} lladdr {GW_MAC} dev v0 nud permanent")
    ns.sh(f"ip route add 198.51.100.0/24 via {GW4}")
    ns.sh(f"ip route add 203.0.113.0/24 via {GW4}")
    # Conntrack only tracks in a namespace where a rule needs it.
    ns.sh("iptables -w -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT")
    # Unreplied UDP entries would expire after 30 s, in the middle of the run.
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600")


def send_udp(sock: socket.socket, targets: Iterator[tuple[str, int]]) -> None:
    """One datagram per (address, port): each becomes one conntrack entry."""
    for addr, port in targets:
        sock.sendto(b"x", (addr, port))


def buckets() -> str:
    """The size of the kernel's conntrack hash table (every dump walks all of it)."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_buckets") as f:
            return f.read().strip()
    except OSError:
        return "?"


HASHSIZE = "/sys/module/nf_conntrack/parameters/hashsize"


@contextlib.contextmanager
def conntrack_hashsize(size: int) -> Iterator[None]:
    """Resize the kernel's conntrack hash (host-wide) for the block, then put it back.

    Routers run with a few thousand buckets; this host's default is far larger and
    every dump walks all of them, so the same code is measured under both.
    """
    with open(HASHSIZE) as f:
        old = f.read().strip()
    with open(HASHSIZE, "w") as f:
        f.write(str(size))
    try:
        yield
    finally:
        with open(HASHSIZE, "w") as f:
            f.write(old)


def bench_conntrack(quick: bool) -> list[Result]:
    """ConntrackFlusher.flush among 10,000 entries vs `conntrack -D -d` per address."""
    from hrneo import ConntrackFlusher

    run(["conntrack", "-F"], check=False)  # this namespace's table only: start from empty
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        background = ((f"198.51.100.{1 + k // 40}", 1000 + k % 40) for k in range(CT_BACKGROUND))
        send_udp(sock, background)
        flusher = ConntrackFlusher()
        wrong_counts = 0
        per_call = len(CT_TARGETS) * CT_PORTS_PER_TARGET

        def prepare(_i: int) -> object:
            targets = ((a, p) for a in CT_TARGETS for p in range(1, 1 + CT_PORTS_PER_TARGET))
            send_udp(sock, targets)
            return None

        def ours(_: object) -> None:
            nonlocal wrong_counts
            if flusher.flush(CT_TARGETS) != per_call:
                wrong_counts += 1

        def tool(_: object) -> None:
            for a in CT_TARGETS:
                run(["conntrack", "-D", "-d", a], check=False)

        runs = 8 if quick else 60
        t_ours = timed_ms(runs, prepare, ours)
        dumped = flusher.stats()["dumped"]
        # The floor: a dump that walks every hash bucket but finds no entry (no IPv6
        # entries exist here). The kernel's table is shared by all namespaces.
        t_walk = timed_ms(runs, lambda _i: None, lambda _: flusher.flush(["2001:db8:ffff::1"]))
        t_tool = timed_ms(max(3, runs // 4), prepare, tool)

        # The same flushes from the event-fed index; events are drained in prepare,
        # as the daemon's loop does between flushes.
        tracking = ConntrackFlusher(track=True)
        wrong_tracked = 0

        def prepare_tracked(i: int) -> object:
            prepare(i)
            tracking.poll_events()
            return None

        def tracked(_: object) -> None:
            nonlocal wrong_tracked
            if tracking.flush(CT_TARGETS) != per_call:
                wrong_tracked += 1

        t_tracked = timed_ms(runs, prepare_tracked, tracked)
        tst = tracking.stats()
    finally:
        sock.close()
    med = statistics.median(t_ours)
    note = (
        f"{dumped // len(t_ours)} entries dumped per call; "
        f"an empty walk of the {buckets()} buckets alone takes "
        f"{statistics.median(t_walk):.3f} ms"
    )
    if wrong_counts:
        note += f"; {wrong_counts} calls did not delete exactly {per_call}"
    med_t = statistics.median(t_tracked)
    note_t = (
        f"{tst['index_lookups']} of {tst['calls']} calls from the index, "
        f"{tst['resyncs']} dump(s) incl. the initial one, {tst['lost']} overflow(s); "
        f"tracking={tst['tracking']}"
    )
    if wrong_tracked:
        note_t += f"; {wrong_tracked} calls did not delete exactly {per_call}"
    return [
        Result(
            name=(
                f"ConntrackFlusher flush {len(CT_TARGETS)} addrs / {CT_BACKGROUND} entries"
                f" ({buckets()} buckets)"
            ),
            unit="ms",
            median=med,
            p99=percentile(t_ours, 99),
            samples=len(t_ours),
            baselines=[
                Baseline(
                    "conntrack -D -d per address",
                    statistics.median(t_tool),
                    statistics.median(t_tool) / med,
                )
            ],
            target="<= 2 ms",
            target_met=med <= 2.0,
            note=note,
        ),
        Result(
            name=(
                f"ConntrackFlusher(track=True) flush {len(CT_TARGETS)} addrs / {CT_BACKGROUND}"
                f" entries ({buckets()} buckets)"
            ),
            unit="ms",
            median=med_t,
            p99=percentile(t_tracked, 99),
            samples=len(t_tracked),
            baselines=[Baseline("dump-mode flush (row above)", med, med / med_t)],
            target="<= 2 ms",
            target_met=med_t <= 2.0,
            note=note_t,
        ),
    ]


# ------------------------------------------------------------------ parsing


def dns_name(name: str) -> bytes:
    """A DNS name in wire format, uncompressed."""
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_answer_packet() -> bytes:
    """An IPv4/UDP DNS response as NFLOG would copy it: a CNAME and two A records."""
    question = dns_name("www.example.com") + struct.pack("!HH", 1, 1)
    header = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 3, 0, 0)
    cname_target = dns_name("cdn.example.net")
    cname_at = 12 + len(question) + 12  # offset of the CNAME's rdata, for compression
    answers = struct.pack("!HHHIH", 0xC00C, 5, 1, 300, len(cname_target)) + cname_target
    for last in (10, 11):
        answers += struct.pack("!HHHIH", 0xC000 | cname_at, 1, 1, 60, 4)
        answers += bytes([198, 51, 100, last])
    dns = header + question + answers
    udp = struct.pack("!HHHH", 53, 40000, 8 + len(dns), 0) + dns
    src, dst = socket.inet_aton("192.0.2.53"), socket.inet_aton(SRC4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, src, dst)
    words = struct.unpack("!10H", ip)
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    return ip + udp


def bench_parse(quick: bool) -> list[Result]:
    """parse_packet throughput on one core (includes the Python call overhead)."""
    from hrneo import parse_packet

    pkt = dns_answer_packet()
    ev = parse_packet(pkt)
    note = ""
    if ev is None or sorted(ev.addresses) != ["198.51.100.10", "198.51.100.11"]:
        note = f"unexpected parse result: {ev!r}"
    per_round = 20_000 if quick else 100_000
    rounds = 3 if quick else 9
    rates: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(per_round):
            parse_packet(pkt)
        rates.append(per_round / ((time.perf_counter_ns() - t0) / 1e9))
    med = statistics.median(rates)
    return [
        Result(
            name=f"parse_packet DNS answer ({len(pkt)} bytes)",
            unit="pkt/s",
            median=med,
            p99=percentile(rates, 1),
            samples=rounds,
            target=">= 100000 pkt/s",
            target_met=med >= 100_000,
            note=note,
        )
    ]


# ------------------------------------------------------------------ output


def fmt(v: float, unit: str) -> str:
    return f"{v:,.0f} {unit}" if unit == "pkt/s" else f"{v:.3f} ms"


def print_table(results: Sequence[Result]) -> None:
    """Human-readable report: one line per measurement, baseline and target beside it."""
    for r in results:
        line = f"{r.name:<46} median {fmt(r.median, r.unit):>14}  p99 {fmt(r.p99, r.unit):>14}"
        line += f"  (n={r.samples})"
        for b in r.baselines:
            line += f"\n    vs {b.name}: {fmt(b.median_ms, 'ms')} -> ours {b.speedup:.1f}x faster"
        if r.target:
            line += f"\n    target {r.target}: {'MET' if r.target_met else 'NOT MET'}"
        if r.note:
            line += f"\n    note: {r.note}"
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hrneo.bench core``."""
    p = argparse.ArgumentParser(
        prog="python -m hrneo.bench core", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--only", choices=PARTS, action="append", help="run only these")
    p.add_argument(
        "--ct-hashsize",
        type=int,
        metavar="N",
        help="also measure the conntrack flush with the kernel's conntrack hash resized to N "
        "buckets (a router-sized table, e.g. 16384); changes a host-wide setting for the "
        "duration of that run and restores it",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    parts = args.only or list(PARTS)
    needs_kernel = bool({"ipset", "nftables", "conntrack"} & set(parts))
    if needs_kernel:
        if os.geteuid() != 0:
            print("the ipset/conntrack benchmarks need root (network namespaces)", file=sys.stderr)
            return 2
        tools = ["ip", "ipset", "conntrack", "iptables"] + (["nft"] if "nftables" in parts else [])
        missing = [t for t in tools if not shutil.which(t)]
        if missing:
            print(f"missing programs: {', '.join(missing)}", file=sys.stderr)
            return 2
    results: list[Result] = []
    ns = Netns(prefix="hrneo-b") if needs_kernel else None
    try:
        if ns is not None:
            setup_conntrack(ns)
            # Everything below (sockets, the ipset/conntrack programs) runs in the namespace.
            with ns.enter():
                if "ipset" in parts:
                    log.info("ipset ...")
                    results += bench_ipset(args.quick)
                if "nftables" in parts:
                    from hrneo.bench.nft import bench_nftables

                    log.info("nftables ...")
                    results += bench_nftables(args.quick)
                if "conntrack" in parts:
                    log.info("conntrack ...")
                    results += bench_conntrack(args.quick)
            if "conntrack" in parts and args.ct_hashsize:
                # The hash size can only be set from the root namespace.
                log.info("conntrack with %d hash buckets ...", args.ct_hashsize)
                with conntrack_hashsize(args.ct_hashsize), ns.enter():
                    results += bench_conntrack(args.quick)
        if "parse" in parts:
            log.info("parse ...")
            results += bench_parse(args.quick)
    finally:
        if ns is not None:
            ns.delete()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print_table(results)
    return 0
