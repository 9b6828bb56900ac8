"""NfqueueReader against the real kernel (hold mode): DNS answers sent across a
veth pair from a "server" namespace are queued by an NFQUEUE rule in the
"client" namespace, and reach the client's socket only once accepted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from conftest import require_kernel_tools
from hrneo import DnsEvent, NfqueueReader
from hrneo.coretypes import NfqueueReaderStats
from hrneo.testing.dnswire import message, tcp_frame
from hrneo.testing.netns import Netns, link

pytestmark = pytest.mark.kernel

QUEUE = 100
SRV4, CLI4 = "192.0.2.1", "192.0.2.2"
SRV6, CLI6 = "2001:db8::1", "2001:db8::2"
CLIENT_PORT = 40053


class Pair(NamedTuple):
    srv: Netns
    cli: Netns


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Server and client namespaces; DNS answers to the client go to queue 100."""
    require_kernel_tools("iptables", "ip6tables")
    srv, cli = Netns("-qsrv"), Netns("-qcli")
    try:
        link(srv, cli, "hrq-s", "hrq-c", [f"{SRV4}/24", f"{SRV6}/64"], [f"{CLI4}/24", f"{CLI6}/64"])
        for tool in ("iptables", "ip6tables"):
            for proto in ("udp", "tcp"):
                cli.sh(
                    f"{tool} -w -A INPUT -p {proto} --sport 53 "
                    f"-j NFQUEUE --queue-num {QUEUE} --queue-bypass"
                )
        yield Pair(srv, cli)
    finally:
        srv.delete()
        cli.delete()


def open_reader(ns: Netns, **kw: int) -> NfqueueReader:
    with ns.enter():
        return NfqueueReader(QUEUE, **kw)


def bound_udp(ns: Netns, port: int, family: int = socket.AF_INET) -> socket.socket:
    with ns.enter():
        s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return s


class Client:
    """The client's socket, and the server's, across the queue."""

    def __init__(self, pair: Pair, family: int = socket.AF_INET) -> None:
        self.dst = CLI6 if family == socket.AF_INET6 else CLI4
        self.rx = bound_udp(pair.cli, CLIENT_PORT, family)
        # Room for every answer of a burst (SO_RCVBUFFORCE: root, past rmem_max).
        self.rx.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)
        self.tx = bound_udp(pair.srv, 53, family)

    def send(self, payloads: list[bytes]) -> None:
        for p in payloads:
            self.tx.sendto(p, (self.dst, CLIENT_PORT))

    def received(self, n: int, timeout: float) -> list[bytes]:
        """What reached the client within `timeout` (stops after n datagrams)."""
        got: list[bytes] = []
        end = time.monotonic() + timeout
        while len(got) < n:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.rx.settimeout(left)
            try:
                got.append(self.rx.recv(65535))
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.fixture
def client(pair: Pair) -> Iterator[Client]:
    c = Client(pair)
    yield c
    c.close()


def read_n(reader: NfqueueReader, n: int, rounds: int = 20) -> list[DnsEvent]:
    got: list[DnsEvent] = []
    for _ in range(rounds):
        if len(got) >= n:
            break
        got += reader.read(timeout=0.5)
    return got


def answer(txid: int, qname: str, ip: str, qtype: str = "A") -> bytes:
    return message(txid, qname, qtype, [(qname, qtype, 60, ip)])


def queue_line(ns: Netns) -> list[int]:
    """This queue's line of /proc/net/netfilter/nfnetlink_queue, as numbers."""
    text = ns.sh("cat /proc/net/netfilter/nfnetlink_queue").stdout
    for line in text.splitlines():
        fields = [int(f) for f in line.split()]
        if fields and fields[0] == QUEUE:
            return fields
    return []


def test_bind_config_and_one_owner(pair: Pair) -> None:
    with open_reader(pair.cli) as r:
        fields = queue_line(pair.cli)
        # queue_number peer_portid queue_total copy_mode copy_range ...: copy-packet
        # mode, the range clamped by the kernel to 0xFFFF less an attribute header.
        assert fields[3:5] == [2, 0xFFFF - 4], fields
        assert r.queue_num == QUEUE and r.notes == []
        with pytest.raises(OSError, match="already bound"):
            open_reader(pair.cli)
    assert queue_line(pair.cli) == [], "close unbinds"
    # Free again: a new reader binds at once.
    open_reader(pair.cli).close()


def test_an_answer_waits_for_its_accept(pair: Pair, client: Client) -> None:
    with open_reader(pair.cli, hold_max_ms=5000) as r:
        client.send([answer(1, "held.example", "192.0.2.44")])
        (ev,) = read_n(r, 1)
        assert ev.qname == "held.example" and ev.packet_id is not None
        assert client.received(1, 0.3) == [], "held until accepted"
        r.accept([ev.packet_id])
        assert len(client.received(1, 2.0)) == 1
        st = r.stats()
        assert st.keys() == NfqueueReaderStats.__required_keys__  # the stub's type
        assert (st["held"], st["released"], st["outstanding"], st["hold_timeouts"]) == (1, 1, 0, 0)
        assert st["hold_p50_us"] >= 300_000, st


def test_a_batch_verdict_releases_many(pair: Pair, client: Client) -> None:
    with open_reader(pair.cli, hold_max_ms=10_000) as r:
        payloads = [answer(i, f"n{i}.example", f"198.51.100.{i % 250}") for i in range(500)]
        client.send(payloads)
        evs = read_n(r, 500, rounds=40)
        assert len(evs) == 500
        ids = [e.packet_id for e in evs]
        assert ids == sorted(ids) and len(set(ids)) == 500
        assert client.received(1, 0.2) == []
        r.accept_all()
        got = client.received(500, 5.0)
        assert len(got) == 500
        st = r.stats()
        assert (st["released"], st["outstanding"], st["fail_opens"], st["dropped"]) == (
            500,
            0,
            0,
            0,
        )


def test_ipv6_answers_are_held_and_released(pair: Pair) -> None:
    c = Client(pair, socket.AF_INET6)
    try:
        with open_reader(pair.cli, hold_max_ms=5000) as r:
            c.send([answer(2, "v6.example", "2001:db8::66", "AAAA")])
            (ev,) = read_n(r, 1)
            assert (ev.src, ev.addresses) == (SRV6, ["2001:db8::66"])
            assert c.received(1, 0.2) == []
            r.accept([ev.packet_id or 0])
            assert len(c.received(1, 2.0)) == 1
    finally:
        c.close()


def test_packets_without_dns_are_accepted_at_once(pair: Pair, client: Client) -> None:
    with open_reader(pair.cli, hold_max_ms=5000) as r:
        client.send([b"\x00\x01garbage", b""])
        assert read_n(r, 1, rounds=2) == []
        assert len(client.received(2, 2.0)) == 2
        st = r.stats()
        assert st["held"] == 2 and st["released"] == 2 and st["malformed"] >= 1, st


def test_nobody_listening_the_queue_is_bypassed(pair: Pair, client: Client) -> None:
    client.send([answer(3, "bypass.example", "192.0.2.45")])
    assert len(client.received(1, 2.0)) == 1


def test_the_deadline_releases_what_is_not_accepted(pair: Pair, client: Client) -> None:
    with open_reader(pair.cli, hold_max_ms=100) as r:
        # Read and never accepted.
        client.send([answer(4, "late.example", "192.0.2.46")])
        assert len(read_n(r, 1)) == 1
        t0 = time.monotonic()
        assert len(client.received(1, 3.0)) == 1
        assert time.monotonic() - t0 < 1.0
        # Never even read: the reader made no progress while packets waited.
        client.send([answer(5, "unread.example", "192.0.2.47")])
        assert len(client.received(1, 3.0)) == 1
        st = r.stats()
        assert st["hold_timeouts"] >= 2, st
        # Read later: the late verdict is harmless.
        assert len(read_n(r, 1)) == 1
        r.accept_all()
        assert r.stats()["verdict_errors"] == 0


def test_close_releases_everything_held(pair: Pair, client: Client) -> None:
    r = open_reader(pair.cli, hold_max_ms=10_000)
    client.send([answer(i, f"c{i}.example", "192.0.2.48") for i in range(50)])
    assert len(read_n(r, 20, rounds=4)) >= 20  # some read, some maybe not
    r.close()
    assert len(client.received(50, 3.0)) == 50


def test_tcp_answers_through_the_queue(pair: Pair) -> None:
    """A reader thread accepts as it reads: handshake, data and FIN all pass."""
    with open_reader(pair.cli, hold_max_ms=5000) as r:
        stop = threading.Event()
        seen: list[DnsEvent] = []

        def pump() -> None:
            while not stop.is_set():
                seen.extend(r.read(timeout=0.05))
                r.accept_all()

        t = threading.Thread(target=pump)
        t.start()
        try:
            data = tcp_frame(answer(6, "tcp.example", "192.0.2.49"))
            with pair.srv.enter():
                lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with pair.cli.enter():
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                lsn.bind((SRV4, 53))
                lsn.listen(1)
                c.settimeout(5)
                c.connect((SRV4, 53))
                conn, _ = lsn.accept()
                with conn:
                    conn.sendall(data[:2])
                    time.sleep(0.01)
                    conn.sendall(data[2:])
                got = b""
                while len(got) < len(data):
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                assert got == data
            finally:
                c.close()
                lsn.close()
            for _ in range(20):
                if seen:
                    break
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(5)
        assert [(e.qname, e.transport) for e in seen] == [("tcp.example", "tcp")]
        assert r.stats()["tcp_reassembled"] == 1
