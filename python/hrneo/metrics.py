"""The optional Prometheus endpoint (``metrics_listen``), served from the daemon's
own selector loop: no thread, nothing blocks.

Every peer is hostile: a request is at most ``MAX_REQUEST`` bytes and must be
complete within ``CONN_TIMEOUT`` seconds (reply included), at most
``MAX_CONNS`` connections are open at once (more are closed at accept), and the
only thing served is ``GET /metrics`` (HTTP/1.0 or 1.1, one request per
connection, then close).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import time
from typing import Callable

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
MAX_CONNS = 8
CONN_TIMEOUT = 5.0
_ACCEPT_BATCH = 16
_MAX_DRAIN = 64 * 1024  # request bytes read and dropped after the reply, at most

Render = Callable[[], tuple[str, str]]  # () -> (content type, body)


class _Conn:
    __slots__ = ("deadline", "drained", "inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = b""
        self.deadline = time.monotonic() + CONN_TIMEOUT
        self.drained = -1  # >= 0 once the reply is out: bytes read and dropped since


class MetricsServer:
    """Listens on (host, port); `render()` gives the page for each GET /metrics."""

    def __init__(self, host: str, port: int, render: Render) -> None:
        self.render = render
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(MAX_CONNS)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[1]  # the real one when asked for port 0 (tests)
        self.address = (
            f"[{host}]:{self.port}" if family == socket.AF_INET6 else f"{host}:{self.port}"
        )
        self._conns: dict[int, _Conn] = {}
        self._sel: selectors.BaseSelector | None = None
        self.served = 0

    def register(self, sel: selectors.BaseSelector) -> None:
        """Serve from `sel`: key.data is a callable to run when the socket is ready."""
        self._sel = sel
        sel.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        assert self._sel is not None
        for _ in range(_ACCEPT_BATCH):  # bounded: a flood cannot starve the loop
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("metrics accept: %s", e)
                return
            if len(self._conns) >= MAX_CONNS:
                conn.close()
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            self._conns[fd] = _Conn(conn)
            self._sel.register(conn, selectors.EVENT_READ, lambda fd=fd: self._ready(fd))

    def _ready(self, fd: int) -> None:
        c = self._conns.get(fd)
        if c is None:
            return
        if c.outbuf:
            self._send(fd, c)
            return
        if c.drained >= 0:
            self._drain(fd, c)
            return
        try:
            data = c.sock.recv(MAX_REQUEST + 1 - len(c.inbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        if not data:
            self._close(fd)
            return
        c.inbuf += data
        end = c.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = c.inbuf.find(b"\n\n")
        if end < 0:
            if len(c.inbuf) > MAX_REQUEST:
                self._reply(fd, c, 431, "Request Header Fields Too Large", "request too large\n")
            return  # wait for the rest of the head
        self._answer(fd, c, bytes(c.inbuf[:end]))

    def _answer(self, fd: int, c: _Conn, head: bytes) -> None:
        line = head.split(b"\n", 1)[0].strip()
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._reply(fd, c, 400, "Bad Request", "bad request\n")
        elif parts[0] != b"GET":
            self._reply(fd, c, 405, "Method Not Allowed", "only GET\n", extra=b"Allow: GET\r\n")
        elif parts[1].split(b"?", 1)[0] != b"/metrics":
            self._reply(fd, c, 404, "Not Found", "only /metrics is served here\n")
        else:
            try:
                ctype, body = self.render()
            except Exception:  # a bug in the status must not kill the daemon
                log.exception("metrics page failed")
                self._reply(fd, c, 500, "Internal Server Error", "internal error\n")
                return
            self.served += 1
            self._reply(fd, c, 200, "OK", body, ctype=ctype)

    def _reply(
        self, fd: int, c: _Conn, code: int, reason: str, body: str, *, extra: bytes = b"",
        ctype: str = "text/plain; charset=utf-8",
    ) -> None:  # fmt: skip
        payload = body.encode()
        c.outbuf = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n".encode()
            + extra + b"\r\n" + payload
        )  # fmt: skip
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.modify(c.sock, selectors.EVENT_WRITE, lambda fd=fd: self._ready(fd))
        self._send(fd, c)

    def _send(self, fd: int, c: _Conn) -> None:
        try:
            sent = c.sock.send(c.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        c.outbuf = c.outbuf[sent:]
        if c.outbuf:
            return
        # Closing with unread request bytes would reset the connection and could
        # destroy the reply in flight: end our side, read until the client closes.
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(fd)
            return
        c.drained = 0
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.modify(c.sock, selectors.EVENT_READ, lambda fd=fd: self._ready(fd))

    def _drain(self, fd: int, c: _Conn) -> None:
        try:
            data = c.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        c.drained += len(data)
        if not data or c.drained > _MAX_DRAIN:
            self._close(fd)

    def expire(self) -> None:
        """Close connections that did not finish in time."""
        now = time.monotonic()
        for fd, c in list(self._conns.items()):
            if now > c.deadline:
                self._close(fd)

    def _close(self, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is None:
            return
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(c.sock)
        c.sock.close()

    def close(self) -> None:
        """Stop listening; drop every open connection."""
        for fd in list(self._conns):
            self._close(fd)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self.sock)
        self.sock.close()
