"""End to end: `python -m hrneo run` in a namespaced router between a client, a wan
host (DNS + web servers answering "wan") and a vpn host (the same web addresses,
answering "vpn"). See topology.py for the picture."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from dnsserver import build_message, query_udp
from e2ehelp import hrneo as _hrneo
from e2ehelp import in_set, resolve, sentinel, status
from topology import (
    BACKENDS,
    DNS4,
    DNS6,
    SET4,
    SET6,
    WEB6,
    Topology,
    wait_for,
)

pytestmark = pytest.mark.e2e

ZONE = {
    ("example.org", "A"): ["203.0.113.22"],
    ("www.example.org", "A"): ["203.0.113.21"],
    ("www.example.org", "AAAA"): ["2001:db8:100::21"],
    ("badexample.org", "A"): ["203.0.113.31"],
    ("www.unwatched.test", "A"): ["203.0.113.32"],
    ("example.org.evil.test", "A"): ["203.0.113.33"],
    ("alias.example.org", "CNAME"): ["cdn.provider.test"],
    ("cdn.provider.test", "A"): ["203.0.113.23"],
    ("go.unwatched.test", "CNAME"): ["edge.example.net"],
    ("edge.example.net", "A"): ["203.0.113.24"],
    ("edge.example.net", "AAAA"): ["2001:db8:100::24"],
    ("tcp.example.org", "A"): ["203.0.113.25"],
    ("list.example.net", "A"): ["203.0.113.26"],
    ("new.example.com", "A"): ["203.0.113.27"],
    ("flush.example.org", "A"): ["203.0.113.10"],
    ("flush.example.org", "AAAA"): ["2001:db8:100::10"],
    ("long.example.org", "A"): ["203.0.113.11"],
    ("change.example.org", "A"): ["203.0.113.12"],
    ("garbage.example.org", "A"): ["203.0.113.41"],
}


def _require_e2e(backend: str) -> None:
    require(os.geteuid() == 0, "needs root")
    tools = ("ipset", "iptables", "ip6tables") if backend == "ipset" else ("nft",)
    for tool in ("ip", "conntrack", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")


@pytest.fixture(scope="module", params=BACKENDS)
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """The four hosts with hrneo running in the router (shared by this module's tests),
    once per backend: every test of the module runs against both."""
    _require_e2e(request.param)
    t = Topology(request.param)
    try:
        for (name, rtype), data in ZONE.items():
            t.dns.set(name, rtype, *data)
        t.write_config(domains=["example.org"], list_lines=["# a list file", "example.net"])
        t.start_daemon()
        yield t
    finally:
        t.close()


@pytest.fixture(autouse=True)
def _daemon_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test using the shared daemon must leave it running."""
    yield
    if "topo" in request.fixturenames:
        t: Topology = request.getfixturevalue("topo")
        assert t.daemon_alive(), f"the daemon died:\n{t.log()}"


# ---------------------------------------------------------------- matching


def test_watched_a_and_aaaa_land_in_sets(topo: Topology) -> None:
    assert resolve(topo, "www.example.org") == ["203.0.113.21"]
    assert resolve(topo, "www.example.org", "AAAA", server=DNS6) == ["2001:db8:100::21"]
    assert resolve(topo, "example.org") == ["203.0.113.22"]
    assert in_set(topo, "203.0.113.21")
    assert in_set(topo, "2001:db8:100::21")
    assert in_set(topo, "203.0.113.22")
    # each family goes to its own set
    assert "2001:db8:100::21" not in topo.members(SET4)
    assert "203.0.113.21" not in topo.members(SET6)


def test_unwatched_names_and_lookalikes_are_not_added(topo: Topology) -> None:
    for name in ("badexample.org", "www.unwatched.test", "example.org.evil.test"):
        assert resolve(topo, name)  # the client did get an answer
    sentinel(topo, "lookalike")
    members = topo.members(SET4)
    for addr in ("203.0.113.31", "203.0.113.32", "203.0.113.33"):
        assert addr not in members


def test_cname_watched_alias_to_unwatched_target(topo: Topology) -> None:
    assert resolve(topo, "alias.example.org") == ["203.0.113.23"]
    assert in_set(topo, "203.0.113.23")


def test_cname_unwatched_alias_to_watched_target(topo: Topology) -> None:
    assert resolve(topo, "go.unwatched.test") == ["203.0.113.24"]
    assert resolve(topo, "go.unwatched.test", "AAAA") == ["2001:db8:100::24"]
    assert in_set(topo, "203.0.113.24")
    assert in_set(topo, "2001:db8:100::24")


def test_dns_over_tcp_is_seen(topo: Topology) -> None:
    assert resolve(topo, "tcp.example.org", tcp=True) == ["203.0.113.25"]
    assert ("tcp", "tcp.example.org", "A") in topo.dns.queries
    assert in_set(topo, "203.0.113.25")


def test_a_big_tcp_answer_in_small_segments_is_routed_whole(topo: Topology) -> None:
    # 400 AAAA records (~20 KB) in 700-byte segments, the length prefix alone first.
    addrs = [f"2001:db8:200::{i + 1:x}" for i in range(400)]
    topo.dns.set("many.example.org", "AAAA", *addrs)
    before = status(topo)["tcp"]["reassembled"]
    topo.dns.tcp_chunk = 700
    try:
        got = resolve(topo, "many.example.org", "AAAA", tcp=True)
    finally:
        topo.dns.tcp_chunk = 0
    assert sorted(got) == sorted(addrs)
    assert wait_for(lambda: set(addrs) <= topo.members(SET6).keys()), topo.log()
    st = status(topo)
    assert st["tcp"]["reassembled"] == before + 1, st["tcp"]
    assert st["tcp"]["gaps"] == 0 and st["tcp"]["dropped_bytes"] == 0, st["tcp"]


def test_list_file_domains_are_watched(topo: Topology) -> None:
    assert resolve(topo, "list.example.net") == ["203.0.113.26"]
    assert in_set(topo, "203.0.113.26")


# ---------------------------------------------------------------- conntrack and routing


@pytest.mark.parametrize(("addr", "qtype"), [("203.0.113.10", "A"), ("2001:db8:100::10", "AAAA")])
def test_connection_opened_before_resolution_is_flushed(
    topo: Topology, addr: str, qtype: str
) -> None:
    old = topo.connect(addr)
    try:
        assert old.ask() == "wan"
        port = f"sport={old.local_port} "
        assert any(port in e for e in topo.conntrack(addr)), topo.conntrack(addr)
        assert resolve(topo, "flush.example.org", qtype) == [addr]
        assert in_set(topo, addr), topo.log()
        # the NEW address's entries are deleted, so the flow cannot stay on wan
        assert wait_for(lambda: not any(port in e for e in topo.conntrack(addr))), topo.conntrack(
            addr
        )
        new = topo.connect(addr)
        try:
            assert new.ask() == "vpn"
        finally:
            new.close()
    finally:
        old.close()


def _entry_id(entries: list[str], port: int) -> str:
    for e in entries:
        if f"sport={port} " in e:
            return e.split("id=")[-1].split()[0]
    return ""


def test_long_lived_connection_keeps_its_entry_and_timeout_refreshes(topo: Topology) -> None:
    addr = "203.0.113.11"
    assert resolve(topo, "long.example.org") == [addr]
    assert in_set(topo, addr)
    conn = topo.connect(addr)
    try:
        assert conn.ask() == "vpn"
        before = _entry_id(topo.conntrack(addr), conn.local_port)
        assert before
        first = topo.members()[addr]
        assert first is not None
        # let the set's countdown move, so a refresh is visible
        assert wait_for(lambda: (topo.members().get(addr) or 0) <= first - 2, timeout=5)
        lowered = topo.members()[addr]
        assert lowered is not None
        assert resolve(topo, "long.example.org") == [addr]
        assert wait_for(lambda: (topo.members().get(addr) or 0) > lowered, timeout=5), (
            f"timeout not refreshed: {topo.members().get(addr)} after {lowered}"
        )
        sentinel(topo, "longlived")
        # a present address is not NEW: its connections keep their conntrack entries
        assert _entry_id(topo.conntrack(addr), conn.local_port) == before, topo.log()
        assert conn.ask() == "vpn"
    finally:
        conn.close()


def test_changed_answer_adds_only_the_new_address(topo: Topology) -> None:
    old_addr, new_addr = "203.0.113.12", "203.0.113.13"
    assert resolve(topo, "change.example.org") == [old_addr]
    assert in_set(topo, old_addr)
    conn = topo.connect(old_addr)
    try:
        assert conn.ask() == "vpn"
        before = _entry_id(topo.conntrack(old_addr), conn.local_port)
        assert before
        topo.dns.set("change.example.org", "A", new_addr)
        assert resolve(topo, "change.example.org") == [new_addr]
        assert in_set(topo, new_addr)
        sentinel(topo, "changed")
        assert old_addr in topo.members()
        assert _entry_id(topo.conntrack(old_addr), conn.local_port) == before
        assert conn.ask() == "vpn"
    finally:
        conn.close()
        topo.dns.set("change.example.org", "A", old_addr)


# ---------------------------------------------------------------- hostile input


def test_garbage_and_spoofed_packets_change_nothing(topo: Topology) -> None:
    before = topo.members()
    # garbage answers to a real query
    topo.dns.garbage = True
    try:
        with topo.client.enter(), pytest.raises((OSError, ValueError)):
            query_udp(DNS4, "garbage.example.org", timeout=0.5)
    finally:
        topo.dns.garbage = False
    # random bytes from port 53, towards the client, both families
    for i in range(200):
        payload = os.urandom(1 + (i * 37) % 600)
        topo.dns.send_raw(payload, "192.0.2.2", 40000 + i)
        topo.dns6.send_raw(payload, "2001:db8:1::2", 40000 + i)
    # a truncated but plausible header, and a QUERY that carries answer records
    spoof = build_message(
        0x4242,
        "spoof.example.org",
        "A",
        [("spoof.example.org", "A", "203.0.113.40")],
        response=False,
    )
    topo.dns.send_raw(spoof, "192.0.2.2", 40999)
    topo.dns.send_raw(spoof[:20], "192.0.2.2", 40998)
    sentinel(topo, "garbage")
    after = topo.members()
    assert "203.0.113.40" not in after
    assert "203.0.113.41" not in after
    added = set(after) - set(before)
    assert all(a.startswith("203.0.113.2") for a in added), added  # only the sentinel


def test_status_reports_counters(topo: Topology) -> None:
    # its own traffic, so it does not depend on the other tests; replies to real
    # queries (unsolicited packets are not even captured: verify_answers)
    topo.dns.set("status.example.org", "A", "203.0.113.42")
    topo.dns.truncated = True
    try:
        # A reply too short to read (or, lost, none at all).
        with topo.client.enter(), pytest.raises((struct.error, OSError)):
            query_udp(DNS4, "status.example.org", timeout=1)
    finally:
        topo.dns.truncated = False
    topo.dns.as_query = True
    try:
        assert resolve(topo, "status.example.org") == ["203.0.113.42"]
    finally:
        topo.dns.as_query = False
    sentinel(topo, "status")
    out = _hrneo("status", "--json", "--socket", str(topo.control))
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["malformed"] >= 1  # counted, not raised
    assert st["queries_ignored"] >= 1  # the QUERY with answer records
    (pol,) = st["policies"]
    assert pol["name"] == "vpn1"
    assert pol["new"] >= 1 and pol["matched"] >= 1
    assert "203.0.113.42" not in topo.members()


# ---------------------------------------------------------------- reload


def test_sighup_picks_up_an_edited_list(topo: Topology) -> None:
    addr = "203.0.113.27"
    assert resolve(topo, "new.example.com") == [addr]
    sentinel(topo, "prereload")
    assert addr not in topo.members()
    kept = set(topo.members())
    topo.list_file.write_text("# a list file\nexample.net\nexample.com\n")
    assert topo.daemon is not None
    topo.daemon.send_signal(signal.SIGHUP)

    def added() -> bool:
        resolve(topo, "new.example.com")
        return in_set(topo, addr, timeout=0.3)

    assert wait_for(added, timeout=8), topo.log()
    # the reload dropped no set entries and the old watchlist still works
    assert kept <= set(topo.members())
    assert resolve(topo, "list.example.net") == ["203.0.113.26"]
    assert topo.daemon_alive()


def test_a_reload_takes_out_what_a_removed_domain_brought(topo: Topology) -> None:
    addr = "203.0.113.26"
    assert resolve(topo, "list.example.net") == [addr]
    assert in_set(topo, addr)
    before = topo.list_file.read_text()
    assert topo.daemon is not None
    try:
        topo.list_file.write_text("# a list file\nexample.com\n")  # example.net gone
        topo.daemon.send_signal(signal.SIGHUP)
        assert wait_for(lambda: addr not in topo.members(), timeout=8), topo.log()
        assert wait_for(lambda: "left their sets" in topo.log(), timeout=5), topo.log()
    finally:
        topo.list_file.write_text(before)
        topo.daemon.send_signal(signal.SIGHUP)
    assert wait_for(lambda: topo.log().count("reloaded") >= 2, timeout=8), topo.log()
    assert resolve(topo, "list.example.net") == [addr]
    assert in_set(topo, addr)


# ---------------------------------------------------------------- why


def test_why_tells_what_brought_an_address(topo: Topology) -> None:
    assert resolve(topo, "alias.example.org") == ["203.0.113.23"]
    assert in_set(topo, "203.0.113.23")
    out = _hrneo("why", "203.0.113.23", "--socket", str(topo.control))
    assert out.returncode == 0, out.stderr
    assert "policy vpn1" in out.stdout and "rule example.org" in out.stdout, out.stdout
    assert "alias.example.org -> cdn.provider.test" in out.stdout, out.stdout
    js = _hrneo("why", "203.0.113.23", "--json", "--socket", str(topo.control))
    reply = json.loads(js.stdout)
    (learned,) = reply["learned"]
    assert learned["names"] == ["alias.example.org", "cdn.provider.test"]
    assert learned["policy"] == "vpn1" and learned["answers"] >= 1
    assert [m["policy"] for m in reply["in_sets"]] == ["vpn1"]
    # Unknown, and not in any set.
    out = _hrneo("why", "198.51.100.77", "--socket", str(topo.control))
    assert out.returncode == 0 and "in no set of hrneo's policies" in out.stdout, out.stdout
    # Not an address: refused, and the daemon lives on.
    bad = _hrneo("why", "'; rm -rf /", "--socket", str(topo.control))
    assert bad.returncode == 1 and "not an IP address" in bad.stderr, bad.stderr
    assert topo.daemon_alive()


# ---------------------------------------------------------------- DNS-blind clients


def test_connections_to_addresses_no_answer_carried_flag_the_client(topo: Topology) -> None:
    # A resolved address first: connections to it are not blind.
    assert resolve(topo, "www.example.org") == ["203.0.113.21"]
    # Then the client connects straight to an address no test resolves (what a
    # browser with its own DNS over HTTPS does), again and again.
    for _ in range(25):
        with contextlib.suppress(OSError):
            topo.connect(WEB6[2], timeout=1).close()

    def flagged() -> list[dict[str, Any]]:
        blind = status(topo)["dns_blind"] or {"clients": []}
        return [c for c in blind["clients"] if c["client"] == "2001:db8:1::2" and c["likely"]]

    assert wait_for(flagged, timeout=10), status(topo)["dns_blind"]
    (c,) = flagged()
    assert c["blind"] >= 20 and c["last_blind"] == WEB6[2], c
    out = _hrneo("status", "--socket", str(topo.control))
    assert "DNS-blind client 2001:db8:1::2" in out.stdout and "DNS over HTTPS" in out.stdout


# ---------------------------------------------------------------- check / stop


def test_check_names_the_bad_line_of_a_list(tmp_path: Path) -> None:
    good = tmp_path / "good.list"
    good.write_text("# fine\nexample.org\nwww.example.net\n")
    bad = tmp_path / "bad.list"
    bad.write_text("# header\nexample.org\nnot a domain!\nexample.net\n")
    cfg = tmp_path / "hrneo.yaml"
    body = """nflog_group: 100
firewall: {{manage_rules: false}}
policies:
  - name: vpn1
    ipset: hr_check
    domains: [example.com]
    domain_files: [{}]
"""
    cfg.write_text(body.format(good))
    ok = _hrneo("check", "--config", str(cfg))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    cfg.write_text(body.format(bad))
    broken = _hrneo("check", "--config", str(cfg))
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert f"{bad}:3" in broken.stdout + broken.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_exits_0_and_leaves_nothing_behind(backend: str) -> None:
    _require_e2e(backend)
    t = Topology(backend)
    try:
        t.write_config(domains=["example.org"], list_lines=[])
        baseline = t.firewall_dump()
        t.start_daemon()
        running = t.firewall_dump()
        # it did install something: capture, the mark, the rule and the table's route
        for needle in t.installed_markers():
            assert needle in running and needle not in baseline, running
        assert t.stop_daemon(signal.SIGTERM) == 0, t.log()
        assert t.firewall_dump() == baseline
        # sets stay: the kernel keeps what was learned across restarts
        assert t.set_exists(SET4)
    finally:
        t.close()
