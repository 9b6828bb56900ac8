"""End to end: a policy for some LAN devices only (`clients`).

The policy lists the client host (192.0.2.2, 2001:db8:1::2); lanx (192.0.2.130,
2001:db8:4::2, on the router's r3) is another LAN device. Both resolve the same
watched name through the router and connect to its address: the client's
connection goes through the vpn host, lanx's through wan, and so does the
router's own (it is not a listed client). The sets stay shared. The periodic
check puts back the per-client rules; a reload to other clients swaps who goes
through the tunnel. Once per backend.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from collections.abc import Iterator

import pytest
from conftest import require
from dnsserver import query_udp
from e2ehelp import in_set, status
from hrneo.testing.netns import Netns
from topology import BACKENDS, DNS4, DNS6, WEB4, WEB6, WEB_PORT, Topology, wait_for

pytestmark = pytest.mark.e2e

CLIENT4, CLIENT6 = "192.0.2.2", "2001:db8:1::2"
LANX4, LANX6 = "192.0.2.130", "2001:db8:4::2"
CLIENTS = [f"{CLIENT4}/32", f"{CLIENT6}/128"]

ZONE = {
    ("www.example.org", "A"): [WEB4[0]],
    ("www.example.org", "AAAA"): [WEB6[0]],
    ("own.example.org", "A"): [WEB4[1]],
    ("check.example.org", "A"): [WEB4[2]],
    ("check.example.org", "AAAA"): [WEB6[2]],
    ("swap.example.org", "A"): [WEB4[3]],
    ("swap.example.org", "AAAA"): [WEB6[3]],
}


def _require_e2e(backend: str) -> None:
    require(os.geteuid() == 0, "needs root")
    tools = ("ipset", "iptables", "ip6tables") if backend == "ipset" else ("nft",)
    for tool in ("ip", "conntrack", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")


@pytest.fixture(scope="module", params=BACKENDS)
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """hrneo with the policy for the client host only and a 1 s periodic check,
    once per backend."""
    _require_e2e(request.param)
    t = Topology(request.param)
    try:
        for (name, rtype), data in ZONE.items():
            t.dns.set(name, rtype, *data)
        t.write_config(domains=["example.org"], list_lines=[], clients=CLIENTS, recheck_interval=1)
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


def resolve_from(ns: Netns, name: str, qtype: str) -> list[str]:
    """Resolve through the router from the host `ns`; the answer's addresses."""
    with ns.enter():
        return query_udp(DNS6 if qtype == "AAAA" else DNS4, name, qtype).addresses()


def ask_from(ns: Netns, address: str) -> str:
    """Connect from the host `ns` to the web servers' `address`: who answers
    ("vpn" or "wan"; "" when nobody does)."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    with ns.enter():
        s = socket.socket(fam, socket.SOCK_STREAM)
    with s:
        s.settimeout(3)
        try:
            s.connect((address, WEB_PORT))
            s.sendall(b"?\n")
            return s.recv(16).decode()
        except OSError:
            return ""


def watched(t: Topology, name: str, qtype: str) -> str:
    """Resolve `name` from the client host and the lanx host (both must get the
    answer), wait until its address is in the set; return the address."""
    (addr,) = resolve_from(t.client, name, qtype)
    assert resolve_from(t.lanx, name, qtype) == [addr]
    assert in_set(t, addr), f"{addr} never reached the set:\n{t.log()}"
    # the flush of the new address's old connections has run
    assert wait_for(lambda: status(t)["flush_pending"] == 0), status(t)
    return addr


def mark_rules(t: Topology) -> list[str]:
    """hrneo's marking rules in the router, as the kernel lists them."""
    if t.backend == "nftables":
        out = t.router.sh("nft -t list table inet hrneo", check=False).stdout
        return [x.strip() for x in out.splitlines() if "meta mark set" in x]
    return [
        line
        for prog in ("iptables", "ip6tables")
        for line in t.router.sh(f"{prog} -w -t mangle -S").stdout.splitlines()
        if "hrneo:vpn1" in line
    ]


def routed_sources(t: Topology) -> set[str]:
    """The source addresses hrneo's marking rules name."""
    if t.backend == "nftables":
        return set(re.findall(r"saddr ([0-9a-f.:]+)", " ".join(mark_rules(t))))
    return {re.sub(r"/(32|128)$", "", m) for m in re.findall(r"-s (\S+)", " ".join(mark_rules(t)))}


# ---------------------------------------------------------------- the rules


def test_marking_names_the_clients_and_leaves_the_router_out(topo: Topology) -> None:
    rules = mark_rules(topo)
    assert routed_sources(topo) == {CLIENT4, CLIENT6}, rules
    assert len(rules) == 2, rules  # one per family, in prerouting only
    if topo.backend == "nftables":
        chains = topo.router.sh("nft -t list table inet hrneo").stdout
        assert "chain g100_mark_prerouting" in chains
        assert "chain g100_mark_output" not in chains
    else:
        assert all(r.startswith("-A PREROUTING -s ") for r in rules), rules


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_the_listed_client_goes_through_the_tunnel_another_does_not(
    topo: Topology, qtype: str
) -> None:
    addr = watched(topo, "www.example.org", qtype)
    assert ask_from(topo.client, addr) == "vpn", topo.firewall_dump()
    assert ask_from(topo.lanx, addr) == "wan", topo.firewall_dump()
    # both at once, each on its own way
    assert (ask_from(topo.client, addr), ask_from(topo.lanx, addr)) == ("vpn", "wan")


def test_the_router_itself_is_not_a_listed_client(topo: Topology) -> None:
    addr = watched(topo, "own.example.org", "A")
    assert ask_from(topo.router, addr) == "wan"
    assert ask_from(topo.client, addr) == "vpn"


def test_the_periodic_check_puts_the_client_rules_back(topo: Topology) -> None:
    before = sorted(mark_rules(topo))
    # as firmware does: its mangle chains rewritten, hrneo's marking gone
    if topo.backend == "nftables":
        topo.router.sh("nft flush chain inet hrneo g100_mark_prerouting")
    else:
        topo.router.sh("iptables -w -t mangle -F PREROUTING")
        topo.router.sh("ip6tables -w -t mangle -F PREROUTING")
    assert mark_rules(topo) == []
    assert wait_for(lambda: sorted(mark_rules(topo)) == before, timeout=8), topo.log()
    for qtype in ("A", "AAAA"):
        addr = watched(topo, "check.example.org", qtype)
        assert (ask_from(topo.client, addr), ask_from(topo.lanx, addr)) == ("vpn", "wan")


def _reload_with(t: Topology, old: list[str], new: list[str]) -> None:
    """Swap the policy's clients in the config file, SIGHUP, wait for the rules."""
    text = t.config.read_text()
    t.config.write_text(text.replace(repr(old)[1:-1], repr(new)[1:-1]))
    assert t.daemon is not None
    t.daemon.send_signal(signal.SIGHUP)
    want = {n.split("/")[0] for n in new}
    assert wait_for(lambda: routed_sources(t) == want, timeout=8), (t.log(), mark_rules(t))


def test_a_reload_to_other_clients_swaps_who_goes_through_the_tunnel(topo: Topology) -> None:
    lanx = [f"{LANX4}/32", f"{LANX6}/128"]
    _reload_with(topo, CLIENTS, lanx)
    try:
        for qtype in ("A", "AAAA"):
            addr = watched(topo, "swap.example.org", qtype)
            assert (ask_from(topo.client, addr), ask_from(topo.lanx, addr)) == ("wan", "vpn")
    finally:
        _reload_with(topo, lanx, CLIENTS)
