"""The status socket: a Unix stream socket, root-only, served inside the daemon's loop.

Protocol: the client sends one line ("status\\n"), the server answers one JSON
document and closes. Requests are bounded in size and in time, and the server
never blocks the event loop for long. At most :data:`MAX_CONNS` clients are
served at once: more are closed as soon as they are accepted, so clients that
connect and wait cannot take the file descriptors the daemon needs. When the
process is out of descriptors (EMFILE), accepting pauses for
:data:`ACCEPT_PAUSE` seconds instead of spinning on a socket that stays readable.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import socket
import stat
import time
from typing import Any, Callable

from hrneo.errors import ControlError

log = logging.getLogger(__name__)

MAX_REQUEST = 256
CONN_TIMEOUT = 2.0  # seconds a client may take to send its request
SEND_TIMEOUT = 1.0
MAX_CONNS = 32
ACCEPT_PAUSE = 1.0
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Handler = Callable[[str], Any]


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse if a daemon answers there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # left by a crashed daemon
        return
    except OSError as e:
        raise ControlError(f"cannot probe {path}: {e}") from None
    finally:
        probe.close()
    raise ControlError(f"another hrneo daemon is listening on {path}")


class ControlServer:
    """Listens on `path`; `handler(command)` returns a JSON-able reply."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._conns: dict[int, tuple[socket.socket, bytearray, float]] = {}
        self._sel: selectors.BaseSelector | None = None
        self._paused_until = 0.0  # accepting paused (out of descriptors) until then
        self.refused = 0  # clients closed at once: over MAX_CONNS
        self.accept_errors = 0
        _remove_stale(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # umask during bind: the socket is never group/world accessible, not even briefly.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise ControlError(f"cannot bind control socket {path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(8)
        sock.setblocking(False)
        self.sock = sock

    def register(self, sel: selectors.BaseSelector) -> None:
        """Serve from the daemon's selector: key.data is a callable to run when ready."""
        self._sel = sel
        sel.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        assert self._sel is not None
        for _ in range(16):  # bounded: a flood of clients cannot starve the loop
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.accept_errors += 1
                if e.errno in _OUT_OF_FDS:
                    self._pause(e)
                else:
                    log.warning("control socket accept: %s", e)
                return
            if len(self._conns) >= MAX_CONNS:
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            self._conns[conn.fileno()] = (conn, bytearray(), time.monotonic())
            fd = conn.fileno()
            self._sel.register(conn, selectors.EVENT_READ, lambda fd=fd: self._readable(fd))

    def _readable(self, fd: int) -> None:
        entry = self._conns.get(fd)
        if entry is None:
            return
        conn, buf, _t = entry
        try:
            data = conn.recv(MAX_REQUEST + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        buf += data
        if b"\n" not in buf and data and len(buf) <= MAX_REQUEST:
            return  # wait for the rest of the line
        if len(buf) > MAX_REQUEST:
            reply: Any = {"error": "request too long"}
        else:
            command = buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
            try:
                reply = self.handler(command)
            except Exception as e:  # a bug in a status handler must not kill the daemon
                log.exception("control command %r failed", command)
                reply = {"error": f"internal error: {e}"}
        try:
            conn.settimeout(SEND_TIMEOUT)
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as e:
            log.debug("control reply not sent: %s", e)
        self._close(fd)

    def _pause(self, e: OSError) -> None:
        """Stop accepting for a while: the listening socket stays readable, and
        each turn of the loop would fail the same way."""
        assert self._sel is not None
        log.warning(
            "control socket: %s: not accepting clients for %.0f s (%d connected)",
            e.strerror or e,
            ACCEPT_PAUSE,
            len(self._conns),
        )
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self.sock)
        self._paused_until = time.monotonic() + ACCEPT_PAUSE

    def expire(self) -> None:
        """Close connections that did not send a request in time; accept again
        after a pause."""
        now = time.monotonic()
        if self._paused_until and now >= self._paused_until and self._sel is not None:
            self._paused_until = 0.0
            self._sel.register(self.sock, selectors.EVENT_READ, self._accept)
        for fd, (_c, _b, t) in list(self._conns.items()):
            if now - t > CONN_TIMEOUT:
                self._close(fd)

    def _close(self, fd: int) -> None:
        entry = self._conns.pop(fd, None)
        if entry is None:
            return
        conn = entry[0]
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn)
        conn.close()

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        for fd in list(self._conns):
            self._close(fd)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self.sock)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, command: str = "status", timeout: float = 5.0) -> Any:
    """Send `command` to the daemon at `path` and return its decoded JSON reply.

    Raises ControlError if the daemon is not running or does not answer.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"hrneo is not running (no daemon listening on {path})") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (run as root)") from None
        sock.sendall(command.encode() + b"\n")
        chunks = []
        total = 0
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            total += len(data)
            if total > 16 * 1024 * 1024:
                raise ControlError("reply too large")
    except socket.timeout:
        raise ControlError(f"no reply from the daemon on {path} within {timeout} s") from None
    except OSError as e:
        raise ControlError(f"control socket {path}: {e}") from None
    finally:
        sock.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError("the daemon sent a reply that is not JSON") from None
