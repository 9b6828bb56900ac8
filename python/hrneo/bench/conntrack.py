"""``python -m hrneo.bench core --only conntrack``: ``ConntrackFlusher.flush`` of a
few addresses among 10,000 entries (from a dump, and from the event-fed
index), against ``conntrack -D -d ADDR`` per address."""

from __future__ import annotations

import contextlib
import socket
import statistics
from collections.abc import Iterator

from hrneo.bench.measure import Baseline, Result, percentile, run, timed_ms
from hrneo.testing.netns import Netns

SRC4, GW4 = "192.0.2.1", "192.0.2.2"
GW_MAC = "02:00:00:00:00:02"  # nobody owns it: packets leave and vanish
CT_BACKGROUND = 10_000
CT_TARGETS = ("203.0.113.1", "203.0.113.2", "203.0.113.3")
CT_PORTS_PER_TARGET = 5


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
