"""parse_packet on packets captured from the kernel (tests/fixtures/capture.py)
and on packets built here, broken in the ways the parser must survive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hrneo import _core
from hrneo.testing.dnswire import ipv4_udp, ipv6_udp, message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

INDEX: dict[str, dict[str, Any]] = json.loads((FIXTURES / "packets" / "index.json").read_text())


@pytest.mark.parametrize("name", sorted(INDEX))
def test_captured_packet(name: str) -> None:
    expect = INDEX[name]
    ev = _core.parse_packet((FIXTURES / "packets" / f"{name}.bin").read_bytes())
    if expect["kind"] != "dns":
        assert ev is None
        return
    assert ev is not None
    assert ev.qname == expect["qname"]
    assert ev.qtype == expect["qtype"]
    assert ev.txid == expect["txid"]
    assert ev.is_response == expect.get("is_response", True)
    assert ev.transport == expect["transport"]
    assert (ev.src, ev.dst, ev.sport) == (expect["src"], expect["dst"], expect["sport"])
    assert ev.chain == expect["chain"]
    assert ev.addresses == expect["addresses"]
    assert ev.min_ttl == expect["min_ttl"]
    # Every answer kept is reachable: its owner is on the chain.
    assert all(a.name in ev.chain for a in ev.answers)


def test_cname_answer_details() -> None:
    ev = _core.parse_packet((FIXTURES / "packets" / "udp6_cname_aaaa.bin").read_bytes())
    assert ev is not None
    got = [(a.name, a.rtype, a.ttl, a.data) for a in ev.answers]
    # The unrelated AAAA the "server" slipped in is gone; order is wire order.
    assert got == [
        ("video.example.org", "CNAME", 600, "video.cdn.example.net"),
        ("video.cdn.example.net", "CNAME", 120, "edge7.cdn.example.net"),
        ("edge7.cdn.example.net", "AAAA", 60, "2001:db8:1::7"),
        ("edge7.cdn.example.net", "AAAA", 60, "2001:db8:1::8"),
    ]


def _a(txid: int = 7) -> bytes:
    return message(txid, "a.example", "A", [("a.example", "A", 10, "192.0.2.5")])


def test_built_packets_v4_v6() -> None:
    ev = _core.parse_packet(ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, _a()))
    assert ev is not None and ev.addresses == ["192.0.2.5"] and ev.dport == 5000
    # Hop-by-hop then fragment header (offset 0, last fragment): still a whole packet.
    ext = [(0, bytes([0, 1, 4, 0, 0, 0, 0])), (44, bytes([0, 0, 0, 0, 0, 0, 1]))]
    ev = _core.parse_packet(ipv6_udp("2001:db8::1", "2001:db8::2", 53, 5000, _a(), ext))
    assert ev is not None and ev.src == "2001:db8::1"


def test_queries_are_events_too() -> None:
    q = message(9, "Q.Example", "AAAA", response=False)
    ev = _core.parse_packet(ipv4_udp("192.0.2.2", "192.0.2.1", 5000, 53, q))
    assert ev is not None
    assert not ev.is_response and ev.qname == "q.example" and ev.qtype == "AAAA"
    assert ev.answers == [] and ev.min_ttl == 0


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45",
        ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, _a())[:19],  # IP header cut
        b"\x44" + ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, _a())[1:],  # IHL 4
        ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, _a())[:30],  # UDP payload cut
        ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, b""),  # empty DNS
        ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, b"\xc0\x0c" * 10),  # garbage
        ipv4_udp("192.0.2.1", "192.0.2.2", 123, 5000, _a()),  # not port 53
        ipv6_udp(
            "2001:db8::1", "2001:db8::2", 53, 5000, _a(), [(60, bytes([0, 1, 4, 0, 0, 0, 0]))] * 30
        ),  # ext header chain
        ipv6_udp(
            "2001:db8::1", "2001:db8::2", 53, 5000, _a(), [(44, bytes([0, 0, 8, 0, 0, 0, 0]))]
        ),  # non-first fragment
        b"\x20" * 60,  # IP version 2
    ],
)
def test_broken_packets_give_none(packet: bytes) -> None:
    assert _core.parse_packet(packet) is None


def test_compression_loop_is_none() -> None:
    # Header with one question whose name points at itself.
    msg = bytes.fromhex("abcd81800001000000000000") + b"\xc0\x0c\x00\x01\x00\x01"
    assert _core.parse_packet(ipv4_udp("192.0.2.1", "192.0.2.2", 53, 5000, msg)) is None
