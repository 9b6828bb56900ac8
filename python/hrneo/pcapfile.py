"""Capture files for ``hrneo replay``: classic pcap (both byte orders, micro- and
nanosecond timestamps) and pcapng, read as a stream of frames, and the link
layers in them: Ethernet (with VLAN tags), Linux cooked (SLL and SLL2), raw IP
and NFLOG (what ``tcpdump -i nflog:GROUP`` writes: the daemon's own view).

A capture file is untrusted input: every length is checked against what is
left and against a cap before anything is read, and every problem is a
:class:`PcapError` that names the byte offset. Nothing else escapes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from hrneo.errors import HrneoError

# Link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW as some systems wrote it into files before LINKTYPE_RAW existed.
_RAW_ALIASES = (12, 14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6)
LINKTYPE_NAMES = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_NFLOG: "NFLOG",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

MAX_PACKET = 256 * 1024  # no link layer hrneo reads has bigger frames
MAX_BLOCK = 16 * 1024 * 1024  # a pcapng block that is read into memory
_SKIP_CHUNK = 1024 * 1024

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_BOM = 0x1A2B3C4D
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_ETH_IP = (0x0800, 0x86DD)
_NFULA_PAYLOAD = 9


class PcapError(HrneoError, ValueError):
    """The file is not a capture hrneo can read, or it is damaged at `offset`."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


@dataclass(frozen=True)
class Frame:
    """One captured frame: its link type, time (seconds since the epoch) and bytes."""

    linktype: int
    time: float
    data: bytes
    offset: int  # where its record starts in the file


class _Stream:
    """Exact reads with the offset kept, for error messages."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.offset = 0

    def read(self, n: int, what: str) -> bytes:
        data = self.read_or_eof(n, what)
        if data is None and n:
            raise PcapError(f"truncated {what}: 0 of {n} bytes", self.offset)
        return data or b""

    def read_or_eof(self, n: int, what: str) -> bytes | None:
        """`n` bytes, or None at a clean end of file."""
        data = self.f.read(n)
        if not data:
            return None
        while len(data) < n:  # a pipe may deliver less than asked
            more = self.f.read(n - len(data))
            if not more:
                raise PcapError(f"truncated {what}: {len(data)} of {n} bytes", self.offset)
            data += more
        self.offset += n
        return data

    def skip(self, n: int, what: str) -> None:
        while n > 0:
            chunk = self.f.read(min(n, _SKIP_CHUNK))
            if not chunk:
                raise PcapError(f"truncated {what}", self.offset)
            n -= len(chunk)
            self.offset += len(chunk)


def read_frames(f: BinaryIO) -> Iterator[Frame]:
    """Every frame of a pcap or pcapng stream, in file order.

    Raises :class:`PcapError` for a file that is neither, and where a damaged
    file stops making sense (the frames before it have been yielded).
    """
    s = _Stream(f)
    magic = s.read_or_eof(4, "file header")
    if magic is None:
        raise PcapError("empty file: not a pcap or pcapng capture", 0)
    if magic in _PCAP_MAGICS:
        yield from _pcap(s, *_PCAP_MAGICS[magic])
    elif magic == _PCAPNG_SHB:
        yield from _pcapng(s)
    else:
        raise PcapError(f"not a pcap or pcapng capture (magic {magic.hex()})", 0)


def _pcap(s: _Stream, endian: str, units: int) -> Iterator[Frame]:
    hdr = s.read(20, "pcap file header")
    major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(endian + "HHiIII", hdr)
    if major != 2:
        raise PcapError(f"pcap version {major} is not 2", 4)
    linktype = network & 0x03FFFFFF  # the upper bits carry the FCS length
    rec = struct.Struct(endian + "IIII")
    while True:
        at = s.offset
        raw = s.read_or_eof(16, "pcap record header")
        if raw is None:
            return
        sec, frac, incl, _orig = rec.unpack(raw)
        if incl > MAX_PACKET:
            raise PcapError(f"record of {incl} bytes (more than {MAX_PACKET}): damaged file", at)
        data = s.read(incl, "pcap record")
        yield Frame(linktype, sec + frac / units, data, at)


def _pcapng(s: _Stream) -> Iterator[Frame]:
    endian = _section_header(s, 0)
    ifaces: list[tuple[int, int, int]] = []  # (linktype, snaplen, units per second)
    while True:
        at = s.offset
        head = s.read_or_eof(8, "pcapng block header")
        if head is None:
            return
        if head[:4] == _PCAPNG_SHB:
            # A new section: its own byte order, its own interfaces.
            endian = _section_header(s, at, head[4:8])
            ifaces = []
            continue
        btype, blen = struct.unpack(endian + "II", head)
        if blen < 12 or blen % 4:
            raise PcapError(f"pcapng block length {blen} is invalid", at)
        body_len = blen - 12
        if btype not in (1, 2, 3, 6):
            s.skip(body_len, "pcapng block")
            _trailer(s, endian, blen, at)
            continue
        if body_len > MAX_BLOCK:
            raise PcapError(f"pcapng block of {blen} bytes: damaged file", at)
        body = s.read(body_len, "pcapng block")
        _trailer(s, endian, blen, at)
        if btype == 1:
            ifaces.append(_interface(body, endian, at))
            continue
        frame = _packet(btype, body, endian, ifaces, at)
        if frame is not None:
            yield frame


def _section_header(s: _Stream, at: int, rest: bytes | None = None) -> str:
    """Read a Section Header Block whose type bytes were consumed; return its byte order."""
    blen_raw = rest if rest is not None else s.read(4, "pcapng section header")
    bom = s.read(4, "pcapng section header")
    if struct.unpack("<I", bom)[0] == _BOM:
        endian = "<"
    elif struct.unpack(">I", bom)[0] == _BOM:
        endian = ">"
    else:
        raise PcapError("pcapng section header without a byte-order magic", at)
    blen = struct.unpack(endian + "I", blen_raw)[0]
    if blen < 28 or blen % 4 or blen > MAX_BLOCK:
        raise PcapError(f"pcapng section header length {blen} is invalid", at)
    major = struct.unpack(endian + "H", s.read(2, "pcapng section header"))[0]
    if major != 1:
        raise PcapError(f"pcapng version {major} is not 1", at)
    s.skip(blen - 18, "pcapng section header")  # minor, section length, options
    _trailer(s, endian, blen, at)
    return endian


def _trailer(s: _Stream, endian: str, blen: int, at: int) -> None:
    end = struct.unpack(endian + "I", s.read(4, "pcapng block trailer"))[0]
    if end != blen:
        raise PcapError(f"pcapng block length {blen} does not match its trailer {end}", at)


def _interface(body: bytes, endian: str, at: int) -> tuple[int, int, int]:
    if len(body) < 8:
        raise PcapError("pcapng interface block too short", at)
    linktype, _res, snaplen = struct.unpack_from(endian + "HHI", body)
    units = 1_000_000
    off = 8
    while off + 4 <= len(body):
        code, olen = struct.unpack_from(endian + "HH", body, off)
        off += 4
        if code == 0:
            break
        if off + olen > len(body):
            raise PcapError("pcapng interface option runs past its block", at)
        if code == 9 and olen >= 1:  # if_tsresol: 10^-v, or 2^-v with the top bit set
            v = body[off]
            units = 2 ** (v & 0x7F) if v & 0x80 else 10 ** min(v, 30)
        off += (olen + 3) & ~3
    return linktype, snaplen, units


def _packet(
    btype: int, body: bytes, endian: str, ifaces: list[tuple[int, int, int]], at: int
) -> Frame | None:
    if btype == 3:  # Simple Packet Block: interface 0, no timestamp
        if len(body) < 4:
            raise PcapError("pcapng simple packet block too short", at)
        if not ifaces:
            raise PcapError("pcapng packet before any interface block", at)
        (orig,) = struct.unpack_from(endian + "I", body)
        linktype, snaplen, _units = ifaces[0]
        caplen = min(orig, len(body) - 4, snaplen or orig)
        return Frame(linktype, 0.0, body[4 : 4 + caplen], at)
    if btype == 6:  # Enhanced Packet Block
        if len(body) < 20:
            raise PcapError("pcapng packet block too short", at)
        iface, hi, lo, caplen, _orig = struct.unpack_from(endian + "IIIII", body)
        off = 20
    else:  # obsolete Packet Block
        if len(body) < 20:
            raise PcapError("pcapng packet block too short", at)
        iface, _drops, hi, lo, caplen, _orig = struct.unpack_from(endian + "HHIIII", body)
        off = 20
    if iface >= len(ifaces):
        raise PcapError(f"pcapng packet of interface {iface}, which was never described", at)
    if caplen > len(body) - off:
        raise PcapError(f"pcapng packet of {caplen} bytes runs past its block", at)
    linktype, _snaplen, units = ifaces[iface]
    return Frame(linktype, ((hi << 32) | lo) / units, body[off : off + caplen], at)


def ip_packet(linktype: int, data: bytes) -> bytes | None:
    """The IPv4/IPv6 packet a frame carries, or None (another protocol, or a link
    type hrneo does not read)."""
    if linktype == LINKTYPE_ETHERNET:
        return _ethertype_payload(data, 12)
    if linktype == LINKTYPE_LINUX_SLL:
        return _ethertype_payload(data, 14) if len(data) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        proto = int.from_bytes(data[0:2], "big")
        return data[20:] if proto in _ETH_IP else None
    if linktype in _RAW_ALIASES:
        return data if data and data[0] >> 4 in (4, 6) else None
    if linktype == LINKTYPE_NFLOG:
        return _nflog_payload(data)
    return None


def _ethertype_payload(data: bytes, at: int) -> bytes | None:
    """Follow the EtherType at `at` through up to 4 VLAN tags to an IP payload."""
    for _ in range(5):
        if len(data) < at + 2:
            return None
        etype = int.from_bytes(data[at : at + 2], "big")
        if etype in _ETH_IP:
            return data[at + 2 :]
        if etype not in _ETH_VLAN:
            return None
        at += 4  # the tag's control field, then the next EtherType
    return None


def _nflog_payload(data: bytes) -> bytes | None:
    """NFULA_PAYLOAD of an NFLOG record. Its TLV lengths are in the byte order of
    the machine that captured, which the file does not say: the order in which
    every TLV fits the record exactly wins (little-endian first, the common case)."""
    if len(data) < 4:
        return None
    for endian in ("little", "big"):
        off, payload, ok = 4, None, True
        while off + 4 <= len(data):
            tlen = int.from_bytes(data[off : off + 2], endian)
            ttype = int.from_bytes(data[off + 2 : off + 4], endian)
            if tlen < 4 or off + tlen > len(data):
                ok = False
                break
            if ttype & 0x7FFF == _NFULA_PAYLOAD:
                payload = data[off + 4 : off + tlen]
            off += (tlen + 3) & ~3
        if ok and payload is not None:
            return payload
    return None
