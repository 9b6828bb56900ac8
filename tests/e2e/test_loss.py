"""End to end: every packet hrneo's capture rule hands to the daemon shows in
exactly one of its counters, also when the daemon cannot keep up.

The wan host replays thousands of answers on one flow the client opened (the
router's conntrack sees them as replies, so the capture rule takes them all).
While the daemon is stopped (SIGSTOP) its socket fills and the kernel drops or
(hold mode) passes the rest unread; the flood ends with the socket still full,
so no later packet reveals those drops by a sequence gap. After SIGCONT the
rule's own counter must equal `packets.captured`, and `read` the sum of its
buckets, exactly. Then again with the daemon running, and with DNS over TCP,
broken answers and a resolver's real answers in the mix.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require
from dnsserver import build_message, build_query, query_tcp
from e2ehelp import hrneo, resolve, status
from hrneo.status import READ_BUCKETS
from hrneo.testing.counters import capture_rule_packets
from topology import DNS4, Topology, wait_for

pytestmark = pytest.mark.e2e

FLOOD_SERVER = "203.0.113.10"  # on wan's loopback; not an address the answers carry
FLOOD = 30_000  # more than the daemon's socket holds (about 6,500 NFLOG, 13,000 NFQUEUE)
ZONE = "loss.example.org"
# (backend, capture): this kernel's nftables has no `queue` expression (test_hold).
CASES = [("ipset", "nflog"), ("nftables", "nflog"), ("ipset", "nfqueue")]


def answers() -> list[bytes]:
    """64 watched answers (a pool of addresses, so the set stays small), 64
    unwatched, and 2 broken ones: cycled through by the flood."""
    out = [
        build_message(i, f"h{i}.{ZONE}", "AAAA", [(f"h{i}.{ZONE}", "AAAA", f"2001:db8:77::{i:x}")])
        for i in range(1, 65)
    ]
    out += [
        build_message(
            i, f"u{i}.unwatched.test", "A", [(f"u{i}.unwatched.test", "A", "198.51.100.77")]
        )
        for i in range(64)
    ]
    return [*out, b"\x00\x01\x02", b"\xff" * 11]


class Flow:
    """One query from the client to FLOOD_SERVER:53; then any number of answers
    sent back on it from wan."""

    def __init__(self, t: Topology) -> None:
        with t.client.enter():
            self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with t.wan.enter():
            self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server.bind((FLOOD_SERVER, 53))
        self.server.settimeout(5)
        self.client.sendto(build_query("flow.loss.test"), (FLOOD_SERVER, 53))
        _q, self.peer = self.server.recvfrom(512)  # the router's masqueraded address

    def send(self, packets: list[bytes], count: int) -> None:
        """`count` packets, cycling through `packets`, as fast as they go."""
        for i in range(count):
            self.server.sendto(packets[i % len(packets)], self.peer)

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.fixture(params=CASES, ids=[f"{b}-{c}" for b, c in CASES])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[Topology, Flow]]:
    backend, capture = request.param
    require(os.geteuid() == 0, "needs root")
    tools = ("ipset", "iptables", "ip6tables") if backend == "ipset" else ("nft",)
    for tool in ("ip", "conntrack", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")
    t = Topology(backend)
    flow = None
    try:
        t.dns.set(f"udp.{ZONE}", "A", "203.0.113.31")
        t.dns.set(f"tcp.{ZONE}", "A", "203.0.113.32")
        t.write_config(domains=[ZONE], list_lines=[], capture=capture)
        t.start_daemon()
        flow = Flow(t)
        yield t, flow
    finally:
        if t.daemon is not None and t.daemon.poll() is None:
            os.kill(t.daemon.pid, signal.SIGCONT)  # a stopped daemon would not stop
        if flow is not None:
            flow.close()
        t.close()


def packets(st: dict[str, Any]) -> dict[str, int]:
    pk: dict[str, int] = st["packets"]
    return pk


def settled(t: Topology) -> tuple[int, dict[str, int]]:
    """The rule's count and the daemon's `packets`, once the daemon accounts for
    everything the rule matched (bounded); the identity is asserted by the caller."""

    def both() -> tuple[int, dict[str, int]]:
        return capture_rule_packets(t.router, t.backend), packets(status(t))

    def accounted() -> bool:
        rule, pk = both()
        return rule == pk["captured"]

    wait_for(accounted, timeout=30, step=0.2)
    time.sleep(0.5)  # anything still in flight would show now
    return both()


def assert_identity(rule: int, pk: dict[str, int], what: str) -> None:
    assert pk["read"] == sum(pk[k] for k in READ_BUCKETS), (what, pk)
    assert pk["captured"] == pk["read"] + pk["dropped"], (what, pk)
    assert rule == pk["captured"], f"{what}: the rule matched {rule}, the daemon counted {pk}"


def test_every_captured_packet_is_counted_once(setup: tuple[Topology, Flow]) -> None:
    t, flow = setup
    assert t.daemon is not None
    pool = answers()
    rule0, pk0 = settled(t)
    assert_identity(rule0, pk0, "at start")

    # The daemon stopped: its socket fills, the rest is dropped (or passed unread),
    # and the flood ends before the daemon reads again.
    os.kill(t.daemon.pid, signal.SIGSTOP)
    try:
        flow.send(pool, FLOOD)
    finally:
        os.kill(t.daemon.pid, signal.SIGCONT)
    rule1, pk1 = settled(t)
    assert_identity(rule1, pk1, "after a flood into a stopped daemon")
    assert rule1 - rule0 == FLOOD, "the capture rule took every answer"
    assert pk1["dropped"] > pk0["dropped"], f"the flood overflowed no socket: {pk1}"
    assert pk1["udp_dns"] > pk0["udp_dns"] and pk1["malformed"] > pk0["malformed"], pk1

    # The daemon running: whatever it keeps up with.
    flow.send(pool, FLOOD)
    rule2, pk2 = settled(t)
    assert_identity(rule2, pk2, "after a flood into a running daemon")
    assert rule2 - rule1 == FLOOD

    # A resolver's answers over UDP and TCP (SYN-ACK, data, FIN: each a packet).
    assert resolve(t, f"udp.{ZONE}") == ["203.0.113.31"]
    with t.client.enter():
        assert query_tcp(DNS4, f"tcp.{ZONE}").addresses() == ["203.0.113.32"]
    flow.send([b"", b"\x00" * 5], 20)
    rule3, pk3 = settled(t)
    assert_identity(rule3, pk3, "after DNS over TCP and broken answers")
    assert pk3["tcp_segments"] > pk2["tcp_segments"] and pk3["non_dns"] > pk2["non_dns"], pk3
    if pk3["dropped"] == pk2["dropped"]:
        assert pk3["malformed"] - pk2["malformed"] == 20, pk3

    # The same in the metrics: the outcomes sum to what the rule matched.
    out = hrneo("status", "--prometheus", "--socket", str(t.control))
    assert out.returncode == 0, out.stderr
    series = re.findall(r'^hrneo_packets_total\{outcome="(\w+)"\} (\d+)$', out.stdout, re.MULTILINE)
    assert {k for k, _ in series} == {*READ_BUCKETS, "dropped"}
    assert sum(int(v) for _, v in series) == capture_rule_packets(t.router, t.backend)
    text = hrneo("status", "--socket", str(t.control)).stdout
    assert f"packets captured {rule3} = dns " in text, text
