"""``python -m hrneo.bench core --only parse``: ``parse_packet`` throughput on a
DNS answer packet built here (a CNAME and two A records)."""

from __future__ import annotations

import socket
import statistics
import struct
import time

from hrneo.bench.measure import Result, percentile

CLIENT4 = "192.0.2.1"  # where the answer goes


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
    src, dst = socket.inet_aton("192.0.2.53"), socket.inet_aton(CLIENT4)
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
