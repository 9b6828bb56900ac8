"""A small authoritative DNS server and client for the end-to-end tests.

Plain sockets and ``struct`` (no dnspython): the point of the tests is what
hrneo reads from the wire, so the bytes are built here, in the open.

The server answers A / AAAA / CNAME from an in-memory zone over UDP and TCP,
follows CNAME chains inside the zone (as a resolver would hand them to a
client), and can be told to answer with garbage or to send raw datagrams from
port 53 (spoofed packets).
"""

from __future__ import annotations

import ipaddress
import os
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "AAAA": 28}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
CLASS_IN = 1


def encode_name(name: str) -> bytes:
    """Wire form of a domain name (no compression)."""
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def decode_name(msg: bytes, off: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at `off`; return it and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(128):  # bounded: a pointer loop must not hang the server
        if off >= len(msg):
            raise ValueError("name runs past the message")
        length = msg[off]
        if length & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise ValueError("truncated pointer")
            if end is None:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            continue
        if length == 0:
            return ".".join(labels).lower(), (end if end is not None else off + 1)
        labels.append(msg[off + 1 : off + 1 + length].decode("ascii", "replace"))
        off += 1 + length
    raise ValueError("name too long or pointer loop")


def rdata(rtype: str, data: str) -> bytes:
    """Wire form of the record data."""
    if rtype == "A":
        return ipaddress.IPv4Address(data).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(data).packed
    return encode_name(data)


def record(name: str, rtype: str, data: str, ttl: int = 300) -> bytes:
    """One resource record."""
    body = rdata(rtype, data)
    return encode_name(name) + struct.pack("!HHIH", TYPES[rtype], CLASS_IN, ttl, len(body)) + body


def build_query(name: str, qtype: str = "A", txid: int | None = None) -> bytes:
    """A recursive query for `name`."""
    txid = random.randrange(0x10000) if txid is None else txid
    header = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", TYPES[qtype], CLASS_IN)


def build_message(
    txid: int,
    qname: str,
    qtype: str,
    answers: list[tuple[str, str, str]],
    *,
    response: bool = True,
    rcode: int = 0,
    ttl: int = 300,
) -> bytes:
    """A DNS message with one question and the given answer records.

    `response=False` builds a QUERY that nevertheless carries answer records:
    the shape of a spoofed packet hrneo must ignore.
    """
    flags = (0x8000 | 0x0400 | 0x0100 | 0x0080 | rcode) if response else 0x0100
    header = struct.pack("!HHHHHH", txid, flags, 1, len(answers), 0, 0)
    question = encode_name(qname) + struct.pack("!HH", TYPES[qtype], CLASS_IN)
    return header + question + b"".join(record(n, t, d, ttl) for n, t, d in answers)


@dataclass
class Answer:
    """A parsed reply, as the client sees it."""

    txid: int
    rcode: int
    records: list[tuple[str, str, str]] = field(default_factory=list)

    def addresses(self) -> list[str]:
        return [d for _, t, d in self.records if t in ("A", "AAAA")]


def parse_reply(msg: bytes) -> Answer:
    """Parse a reply from this server (enough of DNS for the tests)."""
    txid, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", msg)
    off = 12
    for _ in range(qd):
        _, off = decode_name(msg, off)
        off += 4
    out = Answer(txid, flags & 0xF)
    for _ in range(an):
        name, off = decode_name(msg, off)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", msg, off)
        off += 10
        raw = msg[off : off + rdlen]
        tname = TYPE_NAMES.get(rtype, f"TYPE{rtype}")
        if tname == "A":
            data = str(ipaddress.IPv4Address(raw))
        elif tname == "AAAA":
            data = str(ipaddress.IPv6Address(raw))
        elif tname == "CNAME":
            data, _ = decode_name(msg, off)
        else:
            data = raw.hex()
        out.records.append((name, tname, data))
        off += rdlen
    return out


class DnsServer:
    """Authoritative server for an in-memory zone, on UDP and TCP port 53 of `address`.

    Create it inside the host's namespace (``with ns.enter():``) so its sockets
    live there; it serves from a daemon thread until ``close()``.
    """

    def __init__(self, address: str, port: int = 53) -> None:
        self.zone: dict[str, dict[str, list[str]]] = {}
        self.garbage = False  # answer every query with random bytes
        self.truncated = False  # answer with the query's id and five zero bytes (malformed)
        self.as_query = False  # answer with a QUERY message carrying the answer records
        # > 0: write TCP answers in pieces of this size, one segment each, the length
        # prefix alone first (how a slow or small-MSS server splits them).
        self.tcp_chunk = 0
        self.queries: list[tuple[str, str, str]] = []  # (transport, qname, qtype)
        self._lock = threading.Lock()
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.udp = socket.socket(fam, socket.SOCK_DGRAM)
        self.udp.bind((address, port))
        self.tcp = socket.socket(fam, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((address, port))
        self.tcp.listen(16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dnsserver", daemon=True)
        self._thread.start()

    # -- zone -----------------------------------------------------------------
    def set(self, name: str, rtype: str, *data: str) -> None:
        """Replace the records of one name and type (no data: remove them)."""
        with self._lock:
            rrs = self.zone.setdefault(name.lower().strip("."), {})
            if data:
                rrs[rtype] = list(data)
            else:
                rrs.pop(rtype, None)

    def resolve(self, qname: str, qtype: str) -> tuple[int, list[tuple[str, str, str]]]:
        """(rcode, answer records) for a question, following CNAMEs in the zone."""
        answers: list[tuple[str, str, str]] = []
        name = qname.lower().strip(".")
        with self._lock:
            for _ in range(16):  # bounded chain
                rrs = self.zone.get(name)
                if rrs is None:
                    return (3 if not answers else 0), answers
                if qtype in rrs:
                    answers += [(name, qtype, d) for d in rrs[qtype]]
                    return 0, answers
                if "CNAME" in rrs:
                    target = rrs["CNAME"][0]
                    answers.append((name, "CNAME", target))
                    name = target
                    continue
                return 0, answers
        return 2, answers

    def reply(self, query: bytes, transport: str) -> bytes | None:
        """The reply to one query message (None if it is not a query we can read)."""
        if self.garbage:
            return os.urandom(random.randrange(12, 200))
        if self.truncated:
            return query[:2] + b"\x00" * 5
        try:
            txid, flags, qd, _, _, _ = struct.unpack_from("!HHHHHH", query)
            if flags & 0x8000 or qd != 1:
                return None
            qname, off = decode_name(query, 12)
            qtype_num, _ = struct.unpack_from("!HH", query, off)
        except (ValueError, struct.error):
            return None
        qtype = TYPE_NAMES.get(qtype_num, "A")
        self.queries.append((transport, qname, qtype))
        rcode, answers = self.resolve(qname, qtype)
        return build_message(txid, qname, qtype, answers, rcode=rcode, response=not self.as_query)

    # -- raw sends (spoofing) ---------------------------------------------------
    def send_raw(self, payload: bytes, dst: str, dport: int) -> None:
        """Send any bytes as a UDP datagram from this server's port 53."""
        self.udp.sendto(payload, (dst, dport))

    # -- loop -------------------------------------------------------------------
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ)
        sel.register(self.tcp, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                try:
                    if key.fileobj is self.udp:
                        data, peer = self.udp.recvfrom(65535)
                        out = self.reply(data, "udp")
                        if out is not None:
                            self.udp.sendto(out, peer)
                    else:
                        conn, _ = self.tcp.accept()
                        threading.Thread(target=self._tcp_client, args=(conn,), daemon=True).start()
                except OSError:
                    continue
        sel.close()

    def _tcp_client(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            try:
                for _ in range(64):  # bounded queries per connection
                    head = _recv_exact(conn, 2)
                    if head is None:
                        return
                    query = _recv_exact(conn, struct.unpack("!H", head)[0])
                    if query is None:
                        return
                    out = self.reply(query, "tcp")
                    if out is None:
                        return
                    self._send_framed(conn, struct.pack("!H", len(out)) + out)
            except OSError:
                return

    def _send_framed(self, conn: socket.socket, framed: bytes) -> None:
        step = self.tcp_chunk
        if step <= 0:
            conn.sendall(framed)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pieces = [framed[:2]] + [framed[i : i + step] for i in range(2, len(framed), step)]
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.002)  # one write, one segment: nothing left to coalesce

    def close(self) -> None:
        """Stop serving and close the sockets."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.udp.close()
        self.tcp.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def query_udp(server: str, name: str, qtype: str = "A", timeout: float = 2.0) -> Answer:
    """Ask `server` over UDP (call inside the client's namespace or use a socket made there)."""
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        q = build_query(name, qtype)
        s.sendto(q, (server, 53))
        for _ in range(8):  # skip stray datagrams with another id
            data, _ = s.recvfrom(65535)
            if data[:2] == q[:2]:
                return parse_reply(data)
    raise TimeoutError(f"no reply for {name}")


def query_tcp(server: str, name: str, qtype: str = "A", timeout: float = 2.0) -> Answer:
    """Ask `server` over TCP (2-byte length prefix)."""
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((server, 53))
        q = build_query(name, qtype)
        s.sendall(struct.pack("!H", len(q)) + q)
        head = _recv_exact(s, 2)
        if head is None:
            raise ConnectionError("server closed")
        body = _recv_exact(s, struct.unpack("!H", head)[0])
        if body is None:
            raise ConnectionError("server closed")
        return parse_reply(body)
