"""NflogReader against the real kernel: DNS answers sent across a veth pair
from a "server" namespace, copied by an NFLOG rule in the "client" namespace."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from conftest import require_kernel_tools
from hrneo import DnsEvent, NflogReader
from hrneo.coretypes import NflogReaderStats
from hrneo.testing.dnswire import message, tcp_frame
from hrneo.testing.netns import Netns, link

pytestmark = pytest.mark.kernel

GROUP = 100
SRV4, CLI4 = "192.0.2.1", "192.0.2.2"
SRV6, CLI6 = "2001:db8::1", "2001:db8::2"


class Pair(NamedTuple):
    srv: Netns
    cli: Netns


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Server and client namespaces with NFLOG rules for DNS answers on the client."""
    require_kernel_tools("iptables", "ip6tables")
    srv, cli = Netns("-srv"), Netns("-cli")
    try:
        link(srv, cli, "hrn-s", "hrn-c", [f"{SRV4}/24", f"{SRV6}/64"], [f"{CLI4}/24", f"{CLI6}/64"])
        for tool in ("iptables", "ip6tables"):
            for proto in ("udp", "tcp"):
                cli.sh(f"{tool} -w -A INPUT -p {proto} --sport 53 -j NFLOG --nflog-group {GROUP}")
        yield Pair(srv, cli)
    finally:
        srv.delete()
        cli.delete()


def open_reader(ns: Netns, **kw: int) -> NflogReader:
    with ns.enter():
        return NflogReader(GROUP, **kw)


def udp_socket(ns: Netns, family: int = socket.AF_INET) -> socket.socket:
    with ns.enter():
        s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 53))
    return s


def send_udp(ns: Netns, payloads: list[bytes], dst: str = CLI4) -> None:
    s = udp_socket(ns, socket.AF_INET6 if ":" in dst else socket.AF_INET)
    try:
        for p in payloads:
            s.sendto(p, (dst, 40053))
    finally:
        s.close()


def read_n(reader: NflogReader, n: int, rounds: int = 20) -> list[DnsEvent]:
    """Read until n events arrived (bounded: `rounds` reads of at most 0.5 s)."""
    got: list[DnsEvent] = []
    for _ in range(rounds):
        if len(got) >= n:
            break
        got += reader.read(timeout=0.5)
    return got


def answer(txid: int, qname: str, ip: str, qtype: str = "A") -> bytes:
    return message(txid, qname, qtype, [(qname, qtype, 60, ip)])


def test_udp_ipv4_and_ipv6(pair: Pair) -> None:
    with open_reader(pair.cli) as r:
        send_udp(pair.srv, [answer(1, "v4.example", "192.0.2.44")])
        send_udp(pair.srv, [answer(2, "v6.example", "2001:db8::66", "AAAA")], dst=CLI6)
        evs = read_n(r, 2)
        assert [(e.qname, e.addresses, e.transport) for e in evs] == [
            ("v4.example", ["192.0.2.44"], "udp"),
            ("v6.example", ["2001:db8::66"], "udp"),
        ]
        assert (evs[0].src, evs[0].dst, evs[0].sport) == (SRV4, CLI4, 53)
        assert (evs[1].src, evs[1].dst) == (SRV6, CLI6)
        st = r.stats()
        assert st["dns"] == 2 and st["responses"] == 2 and st["dropped"] == 0
        assert st.keys() == NflogReaderStats.__required_keys__  # the stub's type


def test_cname_chain(pair: Pair) -> None:
    m = message(
        3,
        "WWW.Example.com",
        "A",
        [
            ("www.example.com", "CNAME", 300, "cdn.example.net"),
            ("evil.example", "A", 300, "203.0.113.66"),
            ("cdn.example.net", "A", 20, "203.0.113.10"),
            ("cdn.example.net", "A", 20, "203.0.113.11"),
        ],
    )
    with open_reader(pair.cli) as r:
        send_udp(pair.srv, [m])
        (ev,) = read_n(r, 1)
    assert ev.chain == ["www.example.com", "cdn.example.net"]
    assert ev.addresses == ["203.0.113.10", "203.0.113.11"]
    assert [a.rtype for a in ev.answers] == ["CNAME", "A", "A"]
    assert ev.min_ttl == 20


def tcp_exchange(
    pair: Pair, data: bytes, family: int = socket.AF_INET, *, cuts: tuple[int, ...] = ()
) -> None:
    """Connect client -> server:53 and have the server send `data`, then close;
    with `cuts`, in one segment per piece (split at those offsets)."""
    srv_ip, bind_any = (SRV6, "::") if family == socket.AF_INET6 else (SRV4, "0.0.0.0")
    with pair.srv.enter():
        lsn = socket.socket(family, socket.SOCK_STREAM)
    with pair.cli.enter():
        c = socket.socket(family, socket.SOCK_STREAM)
    try:
        lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsn.bind((bind_any, 53))
        lsn.listen(1)
        c.settimeout(5)
        c.connect((srv_ip, 53))
        conn, _ = lsn.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            bounds = [0, *cuts, len(data)]
            for a, b in zip(bounds, bounds[1:]):
                conn.sendall(data[a:b])
                time.sleep(0.005)  # one write, one segment
            got = b""
            while len(got) < len(data):  # bounded by the 5 s socket timeout
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        c.close()
        lsn.close()


def test_tcp_length_prefix_ipv4_ipv6(pair: Pair) -> None:
    with open_reader(pair.cli) as r:
        two = tcp_frame(answer(10, "t1.example", "198.51.100.1")) + tcp_frame(
            answer(11, "t2.example", "198.51.100.2")
        )
        tcp_exchange(pair, two)
        tcp_exchange(
            pair, tcp_frame(answer(12, "t3.example", "2001:db8::3", "AAAA")), socket.AF_INET6
        )
        evs = read_n(r, 3)
        assert [(e.txid, e.qname, e.transport) for e in evs] == [
            (10, "t1.example", "tcp"),
            (11, "t2.example", "tcp"),
            (12, "t3.example", "tcp"),
        ]
        st = r.stats()
        # SYN-ACKs, ACKs and FINs from port 53 carry no DNS.
        assert st["non_dns"] >= 2 and st["malformed"] == 0


def test_a_tcp_answer_split_over_segments_is_read_once_whole(pair: Pair) -> None:
    msg = tcp_frame(answer(15, "split.example", "198.51.100.15"))
    with open_reader(pair.cli) as r:
        # The length prefix alone, then the message in three pieces.
        tcp_exchange(pair, msg, cuts=(2, 10, 30))
        evs = read_n(r, 1)
        assert [(e.qname, e.transport) for e in evs] == [("split.example", "tcp")]
        assert [a.data for a in evs[0].answers] == ["198.51.100.15"]
        st = r.stats()
        assert st["tcp_reassembled"] == 1 and st["incomplete"] == 0, st
        assert st["tcp_flows"] == 0 and st["tcp_unfinished"] == 0, st


def test_a_tcp_answer_cut_by_the_close_is_counted_unfinished(pair: Pair) -> None:
    with open_reader(pair.cli) as r:
        tcp_exchange(pair, tcp_frame(answer(13, "cut.example", "198.51.100.9"))[:20])
        assert read_n(r, 1, rounds=3) == []
        st = r.stats()
        # Waiting for the rest until the FIN came: then counted, nothing kept.
        assert st["tcp_unfinished"] == 1 and st["tcp_dropped_bytes"] == 20, st
        assert st["tcp_flows"] == 0, st


def test_malformed_and_non_dns_counted_not_raised(pair: Pair) -> None:
    with open_reader(pair.cli) as r:
        send_udp(pair.srv, [b"\x00\x01\x81\x80garbage", b"", answer(14, "ok.example", "192.0.2.9")])
        evs = read_n(r, 1)
        assert [e.qname for e in evs] == ["ok.example"]
        st = r.stats()
        assert st["malformed"] == 2 and st["packets"] == 3 and st["dns"] == 1


def test_several_packets_per_datagram(pair: Pair) -> None:
    # Kernel-side batching: up to 20 packets or 0.5 s, whichever comes first.
    with open_reader(pair.cli, qthresh=20, flush_timeout=50) as r:
        send_udp(
            pair.srv, [answer(100 + i, f"b{i}.example", f"192.0.2.{100 + i}") for i in range(10)]
        )
        evs = read_n(r, 10)
        assert [e.txid for e in evs] == [100 + i for i in range(10)]
        st = r.stats()
        assert st["packets"] == 10 and st["datagrams"] < st["packets"]


def test_max_events_keeps_the_rest_pending(pair: Pair) -> None:
    with open_reader(pair.cli, qthresh=20, flush_timeout=50) as r:
        send_udp(pair.srv, [answer(200 + i, f"p{i}.example", "192.0.2.1") for i in range(6)])
        first = r.read(max_events=4, timeout=5)
        rest = read_n(r, 2)
        assert [e.txid for e in first + rest] == [200 + i for i in range(6)]
        assert len(first) <= 4


def test_overflow_counts_drops_and_keeps_reading(pair: Pair) -> None:
    with open_reader(pair.cli, rcvbuf=4096) as r:
        burst = [answer(i & 0xFFFF, "burst.example", "192.0.2.3") for i in range(3000)]
        send_udp(pair.srv, burst)
        got = 0
        for _ in range(200):  # drain what survived (bounded)
            evs = r.read(timeout=0.2)
            if not evs:
                break
            got += len(evs)
        send_udp(pair.srv, [answer(4242, "after.example", "192.0.2.4")])
        after = read_n(r, 1)
        st = r.stats()
        assert st["enobufs"] >= 1
        assert st["dropped"] > 0
        # Sequence numbers make the count exact: every packet is either read or dropped.
        assert got + st["dropped"] == 3000
        assert [e.qname for e in after] == ["after.example"]


def test_timeouts_and_close(pair: Pair) -> None:
    r = open_reader(pair.cli)
    assert r.read(timeout=0) == []
    assert r.read(timeout=0.05) == []
    assert isinstance(r.fileno(), int) and r.fileno() >= 0
    r.close()
    with pytest.raises(ValueError, match="NflogReader is closed"):
        r.read(timeout=0)
    r.close()  # twice is fine


def test_group_already_bound(pair: Pair) -> None:
    with open_reader(pair.cli):
        with pytest.raises(OSError, match="already bound") as exc:
            open_reader(pair.cli)
        assert exc.value.errno == errno.EBUSY
    # Closing frees the group for the next reader.
    open_reader(pair.cli).close()
