"""Smoke test of an installed hrneo._core on a foreign architecture (run by smoke-arm64.sh).

Stdlib only, Python >= 3.9. Builds DNS packets byte by byte, as a router's kernel would
copy them through NFLOG, and checks what the compiled core makes of them.
"""

import errno
import ipaddress
import platform
import struct
import sys

import hrneo
import yaml  # the wheel's one dependency, from the rootfs' python3-yaml
from hrneo import _core


def _name(text: str) -> bytes:
    """DNS wire form of a dotted name."""
    out = b"".join(bytes([len(p)]) + p.encode() for p in text.split("."))
    return out + b"\x00"


def _rr(owner: str, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return _name(owner) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def dns_response(qname: str, qtype: int, records: list[bytes]) -> bytes:
    """A response (QR=1, RD, RA) with one question and `records` as answers."""
    head = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, len(records), 0, 0)
    return head + _name(qname) + struct.pack("!HH", qtype, 1) + b"".join(records)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP packet with a valid header checksum."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv6 + UDP packet with a valid UDP checksum."""
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!IxxxB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _csum(pseudo + udp) or 0xFFFF) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, length, 17, 64) + s + d + udp


def check(cond: bool, what: str) -> None:
    """Fail loudly with `what`."""
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main() -> int:
    """Run the checks; exit status 0 when all pass."""
    print(f"python {platform.python_version()} on {platform.machine()}, hrneo {hrneo.__version__}")
    check(platform.machine() == "aarch64", "running on an aarch64 Python")
    check(_core.__file__ is not None and "abi3" in _core.__file__, "hrneo._core is the abi3 build")
    check(yaml.safe_load("a: [1, 2]") == {"a": [1, 2]}, "pyyaml dependency importable")

    # A CNAME chain, IPv4: every address is credited to the question name's chain.
    a = ipaddress.IPv4Address("192.0.2.10").packed
    answers = [
        _rr("www.example.com", 5, 300, _name("edge.example.net")),
        _rr("edge.example.net", 1, 60, a),
    ]
    pkt = udp4("198.51.100.53", "192.0.2.1", 53, 40000, dns_response("www.example.com", 1, answers))
    ev = _core.parse_packet(pkt)
    check(ev is not None, "IPv4/UDP DNS response parsed")
    assert ev is not None
    check(ev.is_response and ev.txid == 0x1234 and ev.rcode == 0, "header fields (qr, id, rcode)")
    check(ev.qname == "www.example.com" and ev.qtype == "A", f"question {ev.qname} {ev.qtype}")
    check(ev.chain == ["www.example.com", "edge.example.net"], f"CNAME chain {ev.chain}")
    check(ev.addresses == ["192.0.2.10"], f"addresses {ev.addresses}")
    check(ev.min_ttl == 60, f"min_ttl {ev.min_ttl}")
    check(
        (ev.src, ev.sport, ev.dst, ev.dport) == ("198.51.100.53", 53, "192.0.2.1", 40000),
        "addresses and ports (network byte order decoded)",
    )
    check(ev.transport == "udp", "transport udp")

    # AAAA over IPv6.
    aaaa = _rr("v6.example.org", 28, 120, ipaddress.IPv6Address("2001:db8::53").packed)
    pkt6 = udp6("2001:db8::1", "2001:db8::2", 53, 5353, dns_response("v6.example.org", 28, [aaaa]))
    ev6 = _core.parse_packet(pkt6)
    check(ev6 is not None and ev6.addresses == ["2001:db8::53"], "IPv6/UDP AAAA response parsed")

    # Not DNS, and garbage: None, never a crash.
    check(
        _core.parse_packet(udp4("192.0.2.1", "192.0.2.2", 1000, 2000, b"hello")) is None,
        "non-DNS UDP packet -> None",
    )
    check(_core.parse_packet(b"\x45\x00\xff") is None, "truncated packet -> None")

    # A netlink message built on this architecture: header fields in host order,
    # the address and the timeout big-endian (the byte order the kernel expects).
    msg = _core.ipset_add_message("hr_vpn1", ["192.0.2.10"], timeout=3600, seq=7)
    length, mtype, flags, seq = struct.unpack("=IHHI", msg[:12])
    check(
        (length, mtype, flags, seq) == (len(msg), (6 << 8) | 9, 0x205, 7),
        f"ipset ADD header: len {length}, type {mtype:#x}, flags {flags:#x}, seq {seq}",
    )
    check(msg[-12:-8] == ipaddress.IPv4Address("192.0.2.10").packed, "address big-endian")
    check(msg[-4:] == struct.pack(">I", 3600), "timeout big-endian (00 00 0e 10)")

    # Netlink under qemu-user: qemu only translates NETLINK_ROUTE/AUDIT/KOBJECT_UEVENT
    # sockets, so NETLINK_NETFILTER fails. The error must arrive as an OSError (the
    # error mapping of the core), not as an abort; on real hardware this would work.
    try:
        batch = _core.IpsetBatch("hrneo_smoke", timeout=60)
    except OSError as exc:
        check(
            exc.errno in (errno.EPROTONOSUPPORT, errno.EPERM, errno.ENOENT),
            f"IpsetBatch without netfilter netlink -> OSError({exc.errno}) {exc.strerror}",
        )
    else:
        batch.extend(["192.0.2.10", "2001:db8::53"])
        check(len(batch) == 2, "IpsetBatch queued two addresses")
        try:
            batch.add("not-an-address")
        except ValueError:
            check(True, "IpsetBatch.add rejects garbage with ValueError")
        else:
            check(False, "IpsetBatch.add rejects garbage with ValueError")
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
