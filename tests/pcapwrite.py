"""Capture-file writers for the replay tests: classic pcap in either byte order
and timestamp precision, and pcapng (several sections, either byte order,
enhanced and simple packet blocks). Written from the format descriptions
(draft-ietf-opsawg-pcap, draft-ietf-opsawg-pcapng), independently of the reader.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# (time in seconds, frame bytes)
Packet = tuple[float, bytes]


def pcap(
    linktype: int, packets: Sequence[Packet], *, big: bool = False, nano: bool = False
) -> bytes:
    """A classic pcap file."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    units = 1_000_000_000 if nano else 1_000_000
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)
    for t, data in packets:
        sec = int(t)
        frac = round((t - sec) * units)
        out += struct.pack(e + "IIII", sec, frac, len(data), len(data)) + data
    return out


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad(body)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad(value)


def section(
    linktype: int,
    packets: Sequence[Packet],
    *,
    big: bool = False,
    tsresol: int | None = None,
    simple: bool = False,
    junk_block: bool = True,
) -> bytes:
    """One pcapng section: SHB, one interface, the packets (EPB, or SPB if `simple`).

    `tsresol` is the if_tsresol option byte (None: the default, microseconds).
    """
    e = ">" if big else "<"
    shb_opts = _option(e, 4, b"hrneo tests") + _option(e, 0, b"")  # shb_userappl
    out = _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts)
    opts = b""
    units = 1_000_000
    if tsresol is not None:
        opts += _option(e, 9, bytes([tsresol]))
        units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    opts += _option(e, 2, b"eth0") + _option(e, 0, b"")  # if_name
    out += _block(e, 1, struct.pack(e + "HHI", linktype, 0, 0) + opts)
    if junk_block:  # a block type the reader must skip (a custom block, PEN 32473)
        out += _block(e, 0x00000BAD, struct.pack(e + "I", 32473) + b"skip me")
    for t, data in packets:
        if simple:
            out += _block(e, 3, struct.pack(e + "I", len(data)) + data)
            continue
        ts = round(t * units)
        body = struct.pack(e + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
        body += _pad(data) + _option(e, 1, b"a comment") + _option(e, 0, b"")
        out += _block(e, 6, body)
    return out
