"""The ipset ADD datagram built by the core, checked byte by byte against an
independent construction with `struct` (headers in host order, as the kernel reads
them; addresses and timeouts big-endian). Runs unchanged on big-endian hosts."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hrneo import _core

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL = 0x1, 0x4, 0x200
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
IPSET_MSG_ADD = (6 << 8) | 9


def nla(ty: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), ty) + data
    return raw + b"\0" * (-len(raw) % 4)


def expected_add(
    set_name: str, ip: str, timeout: int | None, excl: bool, seq: int, ack: bool = True
) -> bytes:
    addr = ipaddress.ip_network(ip, strict=False)
    kind = 1 if addr.version == 4 else 2  # IPSET_ATTR_IPADDR_IPV4 / _IPV6
    inner = nla(NLA_F_NESTED | 1, nla(NLA_F_NET_BYTEORDER | kind, addr.network_address.packed))
    if addr.prefixlen != addr.max_prefixlen:
        inner += nla(3, bytes([addr.prefixlen]))  # IPSET_ATTR_CIDR
    if timeout is not None:
        inner += nla(NLA_F_NET_BYTEORDER | 6, struct.pack(">I", timeout))
    body = (
        struct.pack(">BBH", 2, 0, 0)  # nfgenmsg: AF_INET, NFNETLINK_V0, res_id 0
        + nla(1, b"\x06")  # IPSET_ATTR_PROTOCOL 6
        + nla(2, set_name.encode() + b"\0")  # IPSET_ATTR_SETNAME
        + nla(NLA_F_NESTED | 7, inner)  # IPSET_ATTR_DATA
    )
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0) | (NLM_F_EXCL if excl else 0)
    return struct.pack("=IHHII", 16 + len(body), IPSET_MSG_ADD, flags, seq, 0) + body


@pytest.mark.parametrize(
    ("ip", "timeout", "excl"),
    [
        ("192.0.2.10", 3600, True),
        ("192.0.2.10", None, True),
        ("2001:db8::10", 600, False),
        ("203.0.113.0/24", None, True),
        ("2001:db8:1::/48", 0, True),
    ],
)
def test_add_message_bytes(ip: str, timeout: int | None, excl: bool) -> None:
    got = _core.ipset_add_message("hr_vpn1", [ip], timeout=timeout, excl=excl, seq=7)
    assert got == expected_add("hr_vpn1", ip, timeout, excl, 7)


def test_timeout_is_big_endian_whatever_the_host() -> None:
    got = _core.ipset_add_message("s", ["192.0.2.1"], timeout=3600)
    assert got.endswith(b"\x00\x00\x0e\x10")


def test_one_message_per_address_with_counting_seqs_only_the_last_acked() -> None:
    # The kernel answers an unacked request only when it fails: the last one's ack
    # tells that every one before it was handled.
    ips = ["192.0.2.1", "192.0.2.2", "2001:db8::3"]
    got = _core.ipset_add_message("s", ips, seq=100)
    want = b"".join(
        expected_add("s", ip, None, True, 100 + i, ack=i == len(ips) - 1)
        for i, ip in enumerate(ips)
    )
    assert got == want


@pytest.mark.parametrize(
    ("name", "ips", "why"),
    [("x" * 32, ["192.0.2.1"], "invalid ipset name"), ("s", ["nonsense"], "not an IP address")],
)
def test_bad_input_is_valueerror(name: str, ips: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        _core.ipset_add_message(name, ips)


def test_nftset_transaction_bytes() -> None:
    got = _core.nftset_add_message("inet#fw4#vpn", ["192.0.2.1"], timeout=3600, seq=9)
    # BATCH_BEGIN: NLMSG_MIN_TYPE, seq 9, nfgenmsg AF_UNSPEC v0, res_id NFNL_SUBSYS_NFTABLES (be16)
    assert got[:20] == struct.pack("=IHHII", 20, 0x10, NLM_F_REQUEST, 9, 0) + b"\x00\x00\x00\x0a"
    _len, mtype, flags, seq, _ = struct.unpack_from("=IHHII", got, 20)
    assert (mtype, seq) == ((10 << 8) | 12, 10)  # NFT_MSG_NEWSETELEM
    assert flags & NLM_F_ACK  # the last (here only) message is acked
    assert got[36:40] == b"\x01\x00\x00\x00"  # nfgenmsg: NFPROTO_INET
    ms = struct.pack(">Q", 3_600_000)
    assert got.count(ms) == 2  # timeout and time left, big-endian whatever the host
    assert got[-20:] == struct.pack("=IHHII", 20, 0x11, NLM_F_REQUEST, 11, 0) + b"\x00\x00\x00\x0a"
    many = _core.nftset_add_message("s", [f"192.0.2.{i}" for i in range(1, 6)], per_message=2)
    assert many.count(struct.pack("=H", (10 << 8) | 12)) == 3
