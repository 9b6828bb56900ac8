"""One daemon per NFLOG group and per control socket: claimed before anything is touched.

A second daemon started by mistake (a doubled init script, a firmware hook)
must be refused before it removes "stale" rules or sets up its own: the rules
it would remove are the first daemon's, alive. So the daemon claims, first:

- its NFLOG group, in its network namespace: a listening Unix socket with the
  abstract name ``@hrneo/nflog/GROUP``. Abstract names live per network
  namespace (as NFLOG groups and netfilter rules do) and the kernel frees them
  when the process dies, however it dies: there is no stale lock to clean.
- its control socket path: an exclusive ``flock`` on ``PATH.lock`` (holding
  the daemon's pid), also freed with the process.

:func:`other_daemons` lists the NFLOG claims of other daemons in the same
network namespace; rules left by a crash are cleaned only when it is empty.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct

from hrneo.errors import DaemonError

LOCK_PREFIX = "hrneo"
_UNIX_TABLES = ("/proc/thread-self/net/unix", "/proc/self/net/unix", "/proc/net/unix")


def _nflog_name(prefix: str, group: int) -> str:
    return f"{prefix}/nflog/{group}"


def _holder_pid(name: str) -> int | None:
    """The pid of whoever listens on abstract socket `name` (best effort)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(0.5)
        probe.connect("\0" + name)
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid: int = struct.unpack("3i", creds)[0]
        return pid
    except OSError:
        return None
    finally:
        probe.close()


def other_daemons(prefix: str = LOCK_PREFIX, mine: str | None = None) -> list[str]:
    """NFLOG claims (``prefix/nflog/GROUP``) of the daemons in this network
    namespace, except `mine`. Empty if the kernel's table cannot be read."""
    want = f"@{prefix}/nflog/"
    for table in _UNIX_TABLES:
        try:
            with open(table, encoding="ascii", errors="replace") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        found = set()
        for line in lines:
            path = line.split()[-1] if len(line.split()) >= 8 else ""
            if path.startswith(want) and path[1:] != mine:
                found.add(path[1:])
        return sorted(found)
    return []


class InstanceLock:
    """The claims of one daemon; :meth:`acquire` raises DaemonError if another holds one."""

    def __init__(
        self, nflog_group: int, control_socket: str | None, *, prefix: str = LOCK_PREFIX
    ) -> None:
        self.prefix = prefix
        self.name = _nflog_name(prefix, nflog_group)
        self.group = nflog_group
        self.control_socket = control_socket
        self._sock: socket.socket | None = None
        self._lockfd: int | None = None

    def acquire(self) -> None:
        """Claim the NFLOG group and the control socket path, or raise DaemonError."""
        try:
            self._claim_group()
            if self.control_socket is not None:
                self._claim_path(self.control_socket)
        except BaseException:
            self.release()
            raise

    def _claim_group(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind("\0" + self.name)
            sock.listen(1)  # never accepted: a peer only learns our pid (SO_PEERCRED)
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE:
                raise DaemonError(f"cannot claim nflog group {self.group}: {e}") from None
            pid = _holder_pid(self.name)
            who = f" (pid {pid})" if pid else ""
            raise DaemonError(
                f"another hrneo daemon{who} reads nflog group {self.group} in this network "
                "namespace: not starting, and leaving its rules alone"
            ) from None
        self._sock = sock

    def _claim_path(self, path: str) -> None:
        lock = path + ".lock"
        parent = os.path.dirname(lock)
        try:
            if parent:
                os.makedirs(parent, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise DaemonError(f"cannot open lock file {lock}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode().strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DaemonError(f"cannot lock {lock}: {e.strerror or e}") from None
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DaemonError(
                f"another hrneo daemon{who} uses control socket {path}: not starting"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lockfd = fd

    def take_group(self, other: InstanceLock) -> None:
        """Hold `other`'s group claim instead of this one's (a reload to a new
        group); `other` is left holding nothing."""
        if other._sock is None:
            return
        if self._sock is not None:
            self._sock.close()
        self._sock, other._sock = other._sock, None
        self.name, self.group = other.name, other.group

    def others(self) -> list[str]:
        """Other daemons' NFLOG claims in this network namespace."""
        return other_daemons(self.prefix, self.name)

    def release(self) -> None:
        """Give the claims back (the lock file stays: unlinking it would race)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None
