"""End to end: forged DNS answers must neither steer nor break the router.

A hostile LAN host (lanx) and the Internet side (wan) send made-up answers for a
watched name, with no query before them, to the client across the router: over
UDP and TCP, IPv4 and IPv6, from their own address and from the resolver's. With
`verify_answers` (the default) none of them adds an address or flushes a
connection; solicited answers still work; the resolver stays reachable. The same
forgeries with `verify_answers: false` do land: the test would see them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import require
from dnsserver import build_message
from e2ehelp import all_members, in_set, resolve, sentinel, status
from forge import send_tcp, send_udp
from hrneo.testing.netns import Netns
from routerops import count_rule, counted, delete_member
from topology import BACKENDS, DNS4, DNS6, SET4, SET6, WEB4, WEB6, Topology, wait_for

pytestmark = pytest.mark.e2e

CLIENT4, CLIENT6 = "192.0.2.2", "2001:db8:1::2"
LANX4, LANX6 = "192.0.2.130", "2001:db8:4::2"
ROUTER4, ROUTER6 = "192.0.2.1", "2001:db8:1::1"
FAR4, FAR6 = "203.0.113.66", "2001:db8:5::66"  # "somewhere on the Internet"
FORGE_PORTS = "20000:20099"  # outside the ephemeral range of real queries

ZONE = {
    ("www.example.org", "A"): ["203.0.113.21"],
    ("www.example.org", "AAAA"): ["2001:db8:100::21"],
    ("tcp.example.org", "A"): ["203.0.113.25"],
    ("tcp.example.org", "AAAA"): ["2001:db8:100::25"],
    ("resolver.example.org", "A"): [DNS4],
    ("resolver.example.org", "AAAA"): [DNS6],
    ("router.example.org", "A"): [ROUTER4],
    ("router.example.org", "AAAA"): [ROUTER6],
}


@dataclass(frozen=True)
class Forgery:
    """One made-up answer: who sends it, from which address, how."""

    label: str
    side: str  # "lan" or "wan"
    proto: str  # "udp" or "tcp"
    src: str
    dst: str
    addr: str  # the address the answer claims

    def payload(self, i: int, needed: bool = True) -> bytes:
        qtype = "AAAA" if ":" in self.addr else "A"
        name = f"forged{i}.example.org"
        # the resolver's and the router's own addresses ride along
        extra = ([DNS6, ROUTER6] if qtype == "AAAA" else [DNS4, ROUTER4]) if needed else []
        answers = [(name, qtype, a) for a in (self.addr, *extra)]
        return build_message(0x1000 + i, name, qtype, answers)


def forgeries() -> list[Forgery]:
    out: list[Forgery] = []
    n = 0
    for side, own4, own6 in (("lan", LANX4, LANX6), ("wan", FAR4, FAR6)):
        for proto in ("udp", "tcp"):
            for src4, src6 in ((own4, own6), (DNS4, DNS6)):  # their own, the resolver's
                n += 1
                # the first of each side names the address of a live connection
                a4 = WEB4[0] if n % 4 == 1 else f"203.0.113.{150 + n}"
                a6 = WEB6[0] if n % 4 == 1 else f"2001:db8:100::{150 + n:x}"
                out.append(Forgery(f"{side}-{proto}", side, proto, src4, CLIENT4, a4))
                out.append(Forgery(f"{side}-{proto}", side, proto, src6, CLIENT6, a6))
    return out


def send_all(t: Topology, needed: bool = True) -> list[Forgery]:
    """Send every forgery (three copies each); `needed`: their answers also name
    the resolver's and the router's addresses."""
    sent = forgeries()
    for i, f in enumerate(sent):
        ns: Netns = t.lanx if f.side == "lan" else t.wan
        for _ in range(3):  # a few copies: one lost datagram proves nothing
            if f.proto == "tcp":
                send_tcp(ns, f.src, f.dst, 20000 + i, f.payload(i, needed))
            elif f.side == "wan" and f.src in (DNS4, DNS6):  # the server's own socket
                (t.dns if f.src == DNS4 else t.dns6).send_raw(
                    f.payload(i, needed), f.dst, 20000 + i
                )
            else:
                send_udp(ns, f.src, f.dst, 20000 + i, f.payload(i, needed))
    return sent


def _require_e2e(backend: str) -> None:
    import os
    import shutil

    require(os.geteuid() == 0, "needs root")
    tools = ("ipset", "iptables", "ip6tables") if backend == "ipset" else ("nft",)
    for tool in ("ip", "conntrack", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")


@pytest.fixture(scope="module", params=BACKENDS)
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """The hosts, hrneo with verify_answers (default) and counters of forged packets,
    once per backend."""
    _require_e2e(request.param)
    t = Topology(request.param)
    try:
        for (name, rtype), data in ZONE.items():
            t.dns.set(name, rtype, *data)
        for fam in (4, 6):
            for side, iface in (("lan", "r3"), ("wan", "r1")):
                for proto in ("udp", "tcp"):
                    count_rule(t, fam, iface, proto, FORGE_PORTS, f"forge-{side}-{proto}")
        t.write_config(domains=["example.org"], list_lines=[])
        t.start_daemon()
        yield t
    finally:
        t.close()


@pytest.fixture(autouse=True)
def _daemon_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "topo" in request.fixturenames:
        t: Topology = request.getfixturevalue("topo")
        assert t.daemon_alive(), f"the daemon died:\n{t.log()}"


def _entry_ids(t: Topology, addr: str, port: int) -> list[str]:
    return [e.split("id=")[-1].split()[0] for e in t.conntrack(addr) if f"sport={port} " in e]


def test_forged_answers_add_nothing_and_flush_nothing(topo: Topology) -> None:
    held = [topo.connect(WEB4[0]), topo.connect(WEB6[0])]
    try:
        assert [c.ask() for c in held] == ["wan", "wan"]
        ids = [_entry_ids(topo, a, c.local_port) for a, c in zip((WEB4[0], WEB6[0]), held)]
        assert all(ids), ids
        before = all_members(topo)
        flushed = status(topo)["flushed"]
        sent = send_all(topo)
        sentinel(topo, "forged")
        # every forgery reached the router (it was not lost on the way) ...
        for fam in (4, 6):
            for label in ("lan-udp", "lan-tcp", "wan-udp", "wan-tcp"):
                assert counted(topo, fam, f"forge-{label}") >= 6, (fam, label)
        # ... and none of them counted
        added = all_members(topo) - before
        assert {a for a in added if not a.startswith("203.0.113.2")} == set(), added
        for f in sent:
            assert f.addr not in all_members(topo), f
        for a in (DNS4, DNS6, ROUTER4, ROUTER6):
            assert a not in all_members(topo)
        assert status(topo)["flushed"] == flushed
        assert [_entry_ids(topo, a, c.local_port) for a, c in zip((WEB4[0], WEB6[0]), held)] == ids
        assert [c.ask() for c in held] == ["wan", "wan"]
    finally:
        for c in held:
            c.close()


def test_solicited_answers_still_count_and_the_resolver_stays_reachable(topo: Topology) -> None:
    send_all(topo)
    for tcp in (False, True):
        name = "tcp.example.org" if tcp else "www.example.org"
        want4, want6 = ZONE[(name, "A")][0], ZONE[(name, "AAAA")][0]
        assert resolve(topo, name, tcp=tcp) == [want4]
        assert resolve(topo, name, "AAAA", tcp=tcp, server=DNS6) == [want6]
        assert in_set(topo, want4) and in_set(topo, want6), topo.log()


def test_the_resolvers_and_the_routers_own_addresses_are_never_added(topo: Topology) -> None:
    """Solicited answers naming addresses the router needs: dropped by the core's
    never-add filter (fed from protect.protected_networks)."""
    try:
        for qtype, server in (("A", DNS4), ("AAAA", DNS6)):
            for name in ("resolver.example.org", "router.example.org"):
                assert resolve(topo, name, qtype, server=server)
        sentinel(topo, "needed")
        members = all_members(topo)
        for a in (DNS4, DNS6, ROUTER4, ROUTER6):
            assert a not in members, (a, members)
        assert resolve(topo, "www.example.org") == ["203.0.113.21"]
    finally:
        # should one get in after all, take it out again, or DNS breaks for the next test
        for a in (DNS4, ROUTER4):
            delete_member(topo, SET4, a)
        for a in (DNS6, ROUTER6):
            delete_member(topo, SET6, a)


def test_only_trusted_resolvers_count(topo: Topology) -> None:
    """trusted_resolvers: [DNS4]: the same server answering over IPv6 (another
    source address) adds nothing."""
    assert topo.stop_daemon(signal.SIGTERM) == 0, topo.log()
    topo.write_config(domains=["example.org"], list_lines=[], trusted_resolvers=[DNS4])
    topo.start_daemon()
    topo.dns.set("trusted.example.org", "AAAA", "2001:db8:100::77")
    topo.dns.set("trusted.example.org", "A", "203.0.113.77")
    assert resolve(topo, "trusted.example.org", "AAAA", server=DNS6) == ["2001:db8:100::77"]
    assert resolve(topo, "trusted.example.org") == ["203.0.113.77"]
    assert in_set(topo, "203.0.113.77")
    sentinel(topo, "trusted")
    assert "2001:db8:100::77" not in topo.members(SET6)


def test_without_verification_the_same_forgeries_land(topo: Topology) -> None:
    """The control: verify_answers: false shows that the forgeries above do reach
    the capture rules and would steer traffic."""
    assert topo.stop_daemon(signal.SIGTERM) == 0, topo.log()
    topo.write_config(domains=["example.org"], list_lines=[], verify_answers=False)
    topo.start_daemon()
    # (without the resolver's address: unverified, it would land and cut DNS off)
    sent = send_all(topo, needed=False)
    sentinel(topo, "unverified")
    udp = [f for f in sent if f.proto == "udp"]
    assert wait_for(lambda: all(f.addr in all_members(topo) for f in udp), timeout=5), (
        [f for f in udp if f.addr not in all_members(topo)], topo.log()
    )  # fmt: skip
    st = status(topo)
    assert st["firewall"]["verify_answers"] is False and st["firewall"]["unverified"] == []
