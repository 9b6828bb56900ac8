"""DNS load for the daemon benchmark: a resolver on the wan host, clients that
ask it through the router, and answers replayed on one established flow.

Addresses are documentation IPv6 addresses (2001:db8::/32): the IPv4
documentation ranges hold 768 addresses, far fewer than a run needs. Which
addresses an answer carries follows from its question name, so runs can ask
for new ones, for ones already in the set, or for an unwatched name:

    q<n>.r<run>.<zone>  ->  4 addresses unique to (run, n)
    p<n>.r<run>.<zone>  ->  4 addresses of a small pool: present after the first pass
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

from hrneo.bench.topology import CLIENT_ADDR, WAN_ADDR, Hosts
from hrneo.testing.dnswire import wire_name
from hrneo.testing.netns import Netns

TYPE_AAAA = 28
ADDRESSES_PER_ANSWER = 4


def addresses(run: int, name_label: bytes) -> list[bytes]:
    """The packed addresses the answer to a question whose first label is `name_label` carries."""
    kind = 1 if name_label[:1] == b"p" else 0
    n = int(name_label[1:] or b"0")
    prefix = bytes.fromhex(f"20010db8{run & 0xFFFF:04x}{kind:04x}")  # a /64 per run and kind
    return [prefix + struct.pack("!IHH", n, 0, k + 1) for k in range(ADDRESSES_PER_ANSWER)]


def address_text(packed: bytes) -> str:
    """An address as the ipset program prints it."""
    return socket.inet_ntop(socket.AF_INET6, packed)


def answer_for(query: bytes, run: int) -> bytes | None:
    """The answer to `query` (AAAA records, name compressed), or None if it is not one."""
    if len(query) < 17:
        return None
    end = 12
    while end < len(query) and query[end] != 0:
        end += 1 + query[end]
    end += 5  # the root label, QTYPE, QCLASS
    if end > len(query):
        return None
    first = query[13 : 13 + query[12]]
    records = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_AAAA, 1, 300, 16) + a for a in addresses(run, first)
    )
    return (
        query[:2]
        + struct.pack("!HHHHH", 0x8180, 1, ADDRESSES_PER_ANSWER, 0, 0)
        + query[12:end]
        + records
    )


def query(txid: int, name: str) -> bytes:
    """An AAAA query for `name`."""
    return (
        struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
        + wire_name(name)
        + struct.pack("!HH", TYPE_AAAA, 1)
    )


class Resolver:
    """The wan host's DNS server, in a thread: answers every query at once."""

    def __init__(self, wan: Netns, run: int) -> None:
        with wan.enter():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((WAN_ADDR, 53))
        self.run = run
        self.answered = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="bench-resolver", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            with contextlib.suppress(OSError):
                data, peer = self.sock.recvfrom(512)
                reply = answer_for(data, self.run)
                if reply is not None:
                    self.sock.sendto(reply, peer)
                    self.answered += 1

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop = True
        self._thread.join(5)
        self.sock.close()


def paced(rate: float, count: int) -> Iterator[int]:
    """Yield 0..count-1 at `rate` per second (bursts of about a millisecond's worth)."""
    burst = max(1, int(rate / 1000))
    start = time.perf_counter()
    for j in range(0, count, burst):
        due = start + j / rate
        while True:
            left = due - time.perf_counter()
            if left <= 0:
                break
            if left > 0.0005:
                time.sleep(left - 0.0003)
        yield from range(j, min(count, j + burst))


def ask(client: Netns, server: str, names: list[str], rate: float) -> float:
    """Send one query per name to `server`:53 at `rate`/s, each from a fresh socket
    (a fresh source port, as stub resolvers do); returns the seconds taken."""
    t0 = time.perf_counter()
    with client.enter():
        for i in paced(rate, len(names)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(query(i & 0xFFFF, names[i]), (server, 53))
            except OSError:
                pass
            finally:
                s.close()
    return time.perf_counter() - t0


class Flow:
    """One query from the client to the wan host's port 53, and then any number
    of answers sent back on that flow: for the router's conntrack they are all
    replies to a query it forwarded. Replaying pre-built answers this way
    reaches rates a resolver written in Python could not serve."""

    def __init__(self, hosts: Hosts) -> None:
        with hosts.client.enter():
            self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind((CLIENT_ADDR, 0))
        with hosts.wan.enter():
            self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        self.server.bind((WAN_ADDR, 53))
        self.client.sendto(query(1, "flow.bench.example"), (WAN_ADDR, 53))
        self.server.settimeout(5)
        _q, self.peer = self.server.recvfrom(512)  # the router's masqueraded address

    def send(self, packets: list[bytes], rate: float) -> float:
        """Send the answers at `rate`/s; returns the seconds taken."""
        t0 = time.perf_counter()
        for i in paced(rate, len(packets)):
            try:
                self.server.sendto(packets[i], self.peer)
            except BlockingIOError:
                time.sleep(0.0001)
                self.server.sendto(packets[i], self.peer)
        return time.perf_counter() - t0

    def close(self) -> None:
        """Close both ends."""
        self.client.close()
        self.server.close()


def set_size(ns: Netns, set_name: str) -> int:
    """Entries in a set (`ipset list -t`)."""
    out = ns.sh(f"ipset list -t {set_name}", check=False).stdout
    for line in out.splitlines():
        if line.startswith("Number of entries:"):
            return int(line.split(":")[1])
    return 0


def wait_settled(count: Callable[[], int], want: int, timeout: float) -> int:
    """Poll until count() reaches want, or stops growing for a second, or timeout."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        if n >= want:
            return n
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 1.0:
            return n
        time.sleep(0.1)
    return count()
