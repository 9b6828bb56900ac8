"""ConntrackFlusher against the real kernel, in a private namespace.

Entries are made with real UDP packets sent out of a dummy interface: every
distinct (destination, port) pair becomes one conntrack entry on OUTPUT (the
`-m conntrack` rule makes the namespace track at all). The kernel's view
before and after a flush is read back with the `conntrack` program.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from typing import NamedTuple

import pytest
from conftest import require_kernel_tools
from hrneo import ConntrackFlusher
from hrneo.status import FlusherStats
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

SRC4 = "192.0.2.1"
SRC6 = "2001:db8::1"
GW4 = "192.0.2.2"
GW6 = "2001:db8::2"
GW_MAC = "02:00:00:00:00:02"


class Entry(NamedTuple):
    """One conntrack entry as `conntrack -L` shows it (timeouts left out)."""

    proto: str
    orig: tuple[str, str, str, str]  # src, dst, sport, dport
    reply_src: str


def setup_router(ns: Netns) -> None:
    """A veth link with routes to the documentation ranges, and conntrack on.

    The routes point at a gateway with a permanent neighbour entry whose MAC
    nobody owns: packets leave (so their entries are confirmed) and vanish.
    """
    ns.sh("ip link add v0 type veth peer name v1")
    ns.sh(f"ip addr add {SRC4}/24 dev v0")
    ns.sh(f"ip -6 addr add {SRC6}/64 dev v0 nodad")
    ns.sh("ip link set v0 up")
    ns.sh("ip link set v1 up")
    ns.sh(f"ip neigh add {GW4} lladdr {GW_MAC} dev v0 nud permanent")
    ns.sh(f"ip -6 neigh add {GW6} lladdr {GW_MAC} dev v0 nud permanent")
    ns.sh(f"ip route add 198.51.100.0/24 via {GW4}")
    ns.sh(f"ip route add 203.0.113.0/24 via {GW4}")
    ns.sh(f"ip -6 route add 2001:db8:1::/64 via {GW6}")
    # Conntrack only tracks in a namespace where some rule needs it.
    ns.sh("iptables -w -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT")
    ns.sh("ip6tables -w -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT")
    # Unreplied UDP entries live 30 s by default: keep them for the whole test.
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600")
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream=600")


def send_udp(ns: Netns, family: socket.AddressFamily, targets: Iterable[tuple[str, int]]) -> int:
    """One datagram to each (address, port) from one socket inside `ns`."""
    with ns.enter():
        s = socket.socket(family, socket.SOCK_DGRAM)
    n = 0
    with s:
        for addr, port in targets:
            s.sendto(b"x", (addr, port))
            n += 1
    return n


def entries(ns: Netns, family: str) -> set[Entry]:
    """The namespace's conntrack table for `ipv4` / `ipv6`."""
    out = ns.sh(["conntrack", "-L", "-f", family]).stdout
    found: set[Entry] = set()
    for line in out.splitlines():
        words = line.split()
        kv = [w.split("=", 1) for w in words if "=" in w]
        srcs = [v for k, v in kv if k == "src"]
        dsts = [v for k, v in kv if k == "dst"]
        sports = [v for k, v in kv if k == "sport"]
        dports = [v for k, v in kv if k == "dport"]
        assert len(srcs) >= 2 and dsts and sports and dports, line
        found.add(Entry(words[0], (srcs[0], dsts[0], sports[0], dports[0]), srcs[1]))
    return found


def all_entries(ns: Netns) -> set[Entry]:
    return entries(ns, "ipv4") | entries(ns, "ipv6")


def matching(es: set[Entry], ips: set[str]) -> set[Entry]:
    return {e for e in es if e.orig[1] in ips or e.reply_src in ips}


@pytest.fixture
def router(netns: Netns) -> Netns:
    require_kernel_tools("iptables", "ip6tables", "conntrack", "sysctl")
    setup_router(netns)
    return netns


def make_flusher(ns: Netns) -> ConntrackFlusher:
    # The socket belongs to the namespace it was opened in.
    with ns.enter():
        return ConntrackFlusher()


def test_flush_deletes_exactly_the_given_addresses_among_10000(router: Netns) -> None:
    v4 = [f"198.51.100.{i}" for i in range(1, 201)] + [f"203.0.113.{i}" for i in range(1, 51)]
    v6 = [f"2001:db8:1::{i:x}" for i in range(1, 101)]
    sent = send_udp(router, socket.AF_INET, ((a, p) for a in v4 for p in range(1000, 1040)))
    sent += send_udp(router, socket.AF_INET6, ((a, p) for a in v6 for p in range(2000, 2020)))
    before = all_entries(router)
    assert sent == 12000
    assert len(before) >= 12000, "the kernel did not track every packet"

    targets = {"198.51.100.7", "198.51.100.200", "203.0.113.33", "2001:db8:1::5", "2001:db8:1::64"}
    gone = matching(before, targets)
    assert len(gone) == 3 * 40 + 2 * 20

    flusher = make_flusher(router)
    deleted = flusher.flush(sorted(targets))

    after = all_entries(router)
    assert deleted == len(gone)
    assert after == before - gone
    assert not matching(after, targets)
    st = flusher.stats()
    assert st["calls"] == 1
    assert st["dumped"] >= len(before)
    assert st["matched"] == st["deleted"] == len(gone)
    assert st["errors"] == 0 and st["unparsed"] == 0


def test_reply_source_matches(router: Netns) -> None:
    # DNAT: the entry's original destination is 192.0.2.99, its reply source 203.0.113.250.
    router.sh(
        "iptables -w -t nat -A OUTPUT -d 192.0.2.99 -p udp -j DNAT --to-destination 203.0.113.250"
    )
    send_udp(router, socket.AF_INET, [("192.0.2.99", 5000), ("192.0.2.98", 5000)])
    send_udp(router, socket.AF_INET, (("198.51.100.9", p) for p in range(3000, 3100)))
    before = entries(router, "ipv4")
    nat = {e for e in before if e.orig[1] == "192.0.2.99"}
    assert len(nat) == 1 and next(iter(nat)).reply_src == "203.0.113.250"

    deleted = make_flusher(router).flush(["203.0.113.250"])

    assert deleted == 1
    assert entries(router, "ipv4") == before - nat


def test_second_flush_finds_nothing(router: Netns) -> None:
    send_udp(router, socket.AF_INET, (("198.51.100.3", p) for p in range(100, 150)))
    send_udp(router, socket.AF_INET6, (("2001:db8:1::3", p) for p in range(100, 110)))
    send_udp(router, socket.AF_INET, (("198.51.100.4", p) for p in range(100, 150)))
    flusher = make_flusher(router)
    assert flusher.flush(["198.51.100.3", "2001:db8:1::3"]) == 60
    assert flusher.flush(iter(["198.51.100.3", "2001:db8:1::3"])) == 0
    st = flusher.stats()
    assert st["calls"] == 2 and st["deleted"] == 60
    assert st["already_gone"] == 0 and st["errors"] == 0
    left = entries(router, "ipv4")
    assert {e.orig[1] for e in left} == {"198.51.100.4"} and len(left) == 50


def test_empty_input_does_not_touch_the_kernel(router: Netns) -> None:
    send_udp(router, socket.AF_INET, (("198.51.100.5", p) for p in range(1, 11)))
    flusher = make_flusher(router)
    assert flusher.flush([]) == 0
    assert flusher.flush(()) == 0
    assert flusher.stats()["calls"] == 0
    assert flusher.stats().keys() == FlusherStats.__required_keys__  # the stub's type
    assert len(entries(router, "ipv4")) == 10


def test_bad_address_raises_and_deletes_nothing(router: Netns) -> None:
    send_udp(router, socket.AF_INET, (("198.51.100.6", p) for p in range(1, 11)))
    flusher = make_flusher(router)
    with pytest.raises(ValueError, match=r"198\.51\.100\.300"):
        flusher.flush(["198.51.100.6", "198.51.100.300"])
    with pytest.raises(TypeError):
        flusher.flush("198.51.100.6")
    with pytest.raises(TypeError):
        flusher.flush([198])  # type: ignore[list-item]
    assert flusher.stats()["calls"] == 0
    assert len(entries(router, "ipv4")) == 10


# ------------------------------------------------------------------ track=True


def make_tracking(ns: Netns, event_rcvbuf: int | None = None) -> ConntrackFlusher:
    with ns.enter():
        f = ConntrackFlusher(track=True, event_rcvbuf=event_rcvbuf)
    assert f.stats()["tracking"] == 1, "this kernel must deliver conntrack events"
    return f


def test_dump_mode_has_no_event_socket(router: Netns) -> None:
    flusher = make_flusher(router)
    assert flusher.fileno() is None
    assert flusher.poll_events() == 0
    st = flusher.stats()
    assert st["tracking"] == 0 and st["resyncs"] == 0 and st["index_entries"] == 0


def test_tracking_deletes_exactly_entries_made_before_and_after_it(router: Netns) -> None:
    before_v4 = [f"198.51.100.{i}" for i in range(1, 151)]
    after_v4 = [f"198.51.100.{i}" for i in range(151, 201)] + [
        f"203.0.113.{i}" for i in range(1, 51)
    ]
    v6 = [f"2001:db8:1::{i:x}" for i in range(1, 101)]
    early = send_udp(router, socket.AF_INET, ((a, p) for a in before_v4 for p in range(1000, 1040)))
    flusher = make_tracking(router)
    st0 = flusher.stats()
    assert st0["resyncs"] == 1 and st0["dumped"] >= early and st0["index_entries"] >= early
    late = send_udp(router, socket.AF_INET, ((a, p) for a in after_v4 for p in range(1000, 1040)))
    late += send_udp(router, socket.AF_INET6, ((a, p) for a in v6 for p in range(2000, 2020)))
    before = all_entries(router)
    assert early + late == 12000 and len(before) >= 12000

    # Made before the flusher (index from the initial dump) and after it (from events).
    targets = {"198.51.100.7", "198.51.100.200", "203.0.113.33", "2001:db8:1::5", "2001:db8:1::64"}
    gone = matching(before, targets)
    assert len(gone) == 3 * 40 + 2 * 20

    deleted = flusher.flush(sorted(targets))

    after = all_entries(router)
    assert deleted == len(gone)
    assert after == before - gone
    st = flusher.stats()
    assert st["index_lookups"] == 1 and st["resyncs"] == 1, "answered without a dump"
    assert st["dumped"] == st0["dumped"]
    assert st["events"] >= late and st["lost"] == 0
    assert st["matched"] == st["deleted"] == len(gone)
    assert st["errors"] == 0 and st["unparsed"] == 0 and st["already_gone"] == 0
    assert st["index_entries"] >= len(before) - len(gone)
    # The DESTROY events of our own deletes arrive: at least for the 120 entries made
    # after subscribing (with nf_conntrack_events=2, older entries carry no event
    # cache). Nothing is left to find.
    assert flusher.poll_events() >= 120
    assert flusher.flush(sorted(targets)) == 0
    assert flusher.stats()["already_gone"] == 0 and flusher.stats()["index_lookups"] == 2


def test_tracking_matches_reply_source(router: Netns) -> None:
    flusher = make_tracking(router)
    router.sh(
        "iptables -w -t nat -A OUTPUT -d 192.0.2.99 -p udp -j DNAT --to-destination 203.0.113.250"
    )
    send_udp(router, socket.AF_INET, [("192.0.2.99", 5000), ("192.0.2.98", 5000)])
    send_udp(router, socket.AF_INET, (("198.51.100.9", p) for p in range(3000, 3100)))
    assert flusher.poll_events() >= 102
    before = entries(router, "ipv4")
    nat = {e for e in before if e.orig[1] == "192.0.2.99"}
    assert len(nat) == 1 and next(iter(nat)).reply_src == "203.0.113.250"

    assert flusher.flush(["203.0.113.250"]) == 1
    assert entries(router, "ipv4") == before - nat
    assert flusher.stats()["index_lookups"] == 1


def test_lost_events_fall_back_to_one_dump_then_the_index_works_again(router: Netns) -> None:
    send_udp(router, socket.AF_INET, (("198.51.100.20", p) for p in range(1, 11)))
    # A 32 KiB buffer holds a few dozen events: the burst below overflows it.
    flusher = make_tracking(router, event_rcvbuf=16384)
    send_udp(router, socket.AF_INET, (("198.51.100.22", p) for p in range(1, 1001)))
    send_udp(router, socket.AF_INET, (("198.51.100.21", p) for p in range(1, 11)))
    before = entries(router, "ipv4")
    targets = {"198.51.100.20", "198.51.100.21"}
    gone = matching(before, targets)
    assert len(gone) == 20

    assert flusher.flush(sorted(targets)) == 20

    assert entries(router, "ipv4") == before - gone
    st = flusher.stats()
    assert st["lost"] >= 1, "the burst must have overflowed the event buffer"
    assert st["resyncs"] == 2 and st["index_lookups"] == 0, "one dump, which rebuilt the index"
    assert st["index_entries"] >= 1000
    lost = st["lost"]
    flusher.poll_events()  # the few DESTROY events of those deletes
    # New entries, read as they come (one event each), are found without a dump.
    for p in range(1, 11):
        send_udp(router, socket.AF_INET, [("198.51.100.23", p)])
        assert flusher.poll_events() == 1
    before = entries(router, "ipv4")
    gone = matching(before, {"198.51.100.23"})
    assert len(gone) == 10

    assert flusher.flush(["198.51.100.23"]) == 10

    assert entries(router, "ipv4") == before - gone
    st = flusher.stats()
    assert st["lost"] == lost and st["resyncs"] == 2 and st["index_lookups"] == 1
    assert st["deleted"] == 30 and st["already_gone"] == 0 and st["errors"] == 0


def test_events_of_dns_flows_never_reach_the_index(router: Netns) -> None:
    flusher = make_tracking(router)
    assert flusher.stats()["dns_filtered"] == 1
    base = flusher.stats()["index_entries"]
    # A resolver's traffic: UDP and TCP to port 53 (the TCP SYN alone makes an entry).
    send_udp(router, socket.AF_INET, (("198.51.100.53", 53), ("203.0.113.53", 53)))
    send_udp(router, socket.AF_INET6, (("2001:db8:1::53", 53),))
    with router.enter():
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        t.connect(("198.51.100.54", 53))
    # And two ordinary flows.
    send_udp(router, socket.AF_INET, (("198.51.100.80", 8080),))
    send_udp(router, socket.AF_INET6, (("2001:db8:1::80", 443),))
    try:
        flusher.poll_events()
        st = flusher.stats()
        assert len(all_entries(router)) >= 6, "the kernel tracks all of them"
        assert st["index_entries"] == base + 2, st
        assert st["events"] == 2 and st["lost"] == 0
        # An ordinary flow is found without a dump.
        assert flusher.flush(["198.51.100.80"]) == 1
        assert flusher.stats()["resyncs"] == 1
    finally:
        t.close()
