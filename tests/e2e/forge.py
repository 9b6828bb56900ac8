"""Forged DNS answers, sent from inside a namespace with any source address.

UDP goes through an ordinary socket bound (IP_TRANSPARENT) to the forged
source and port 53, so the kernel writes correct headers and checksums. TCP is
a single raw segment (ACK|PSH, no handshake before it) with a correct checksum,
carrying a length-prefixed DNS message: what an attacker without a connection
can send. Conntrack verifies checksums, so wrong ones would prove nothing.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from hrneo.testing.netns import Netns

IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _transparent(sock: socket.socket, family: socket.AddressFamily) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_segment(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A TCP segment (ACK|PSH) with its checksum over the pseudo-header."""
    head = struct.pack("!HHIIBBHHH", sport, dport, 0x1000, 0x2000, 5 << 4, 0x18, 65535, 0, 0)
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    length = len(head) + len(payload)
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, length)
    else:
        pseudo = s + d + struct.pack("!I3xB", length, socket.IPPROTO_TCP)
    csum = _checksum(pseudo + head + payload)
    return head[:16] + struct.pack("!H", csum) + head[18:] + payload


def send_udp(ns: Netns, src: str, dst: str, dport: int, payload: bytes) -> None:
    """One UDP datagram from `src`:53 to `dst`:`dport`, sent from namespace `ns`."""
    fam = _family(dst)
    with ns.enter():
        sock = socket.socket(fam, socket.SOCK_DGRAM)
    with sock:
        _transparent(sock, fam)
        sock.bind((src, 53))
        sock.sendto(payload, (dst, dport))


def send_tcp(ns: Netns, src: str, dst: str, dport: int, payload: bytes) -> None:
    """One TCP segment from `src`:53 to `dst`:`dport` carrying `payload` as DNS over TCP."""
    fam = _family(dst)
    with ns.enter():
        sock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    with sock:
        _transparent(sock, fam)
        sock.bind((src, 0))
        framed = struct.pack("!H", len(payload)) + payload
        sock.sendto(tcp_segment(src, dst, 53, dport, framed), (dst, 0))
