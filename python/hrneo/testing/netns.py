"""Private network namespaces for tests and benchmarks (root only).

Every namespace made here is named ``<prefix><pid>-<n>`` (``hrneo-t`` for the
tests, ``hrneo-b`` for the benchmarks), uses only documentation addresses, and
is deleted (with every process left in it) by :meth:`Netns.delete`.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from typing import Union

Cmd = Union[str, Sequence[str]]

_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _argv(cmd: Cmd) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Netns:
    """One network namespace with its loopback up."""

    def __init__(self, tag: str = "", prefix: str = "hrneo-t") -> None:
        self.name = f"{prefix}{os.getpid()}-{next(_counter)}{tag}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.alive = True
        self.sh("ip link set lo up")

    # -- running things inside -------------------------------------------------
    def argv(self, cmd: Cmd) -> list[str]:
        return ["ip", "netns", "exec", self.name, *_argv(cmd)]

    def sh(
        self, cmd: Cmd, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace; raise with its stderr if it fails and check is set."""
        proc = subprocess.run(
            self.argv(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {cmd!r} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def popen(self, cmd: Cmd, **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(cmd), **kwargs)  # type: ignore[call-overload,no-any-return]

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Move the calling thread into the namespace for the block.

        Sockets opened inside (NflogReader, IpsetBatch, ConntrackFlusher) stay
        bound to this namespace after the block ends.
        """
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.name}") as ns:
            _setns(ns.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    # -- clean-up --------------------------------------------------------------
    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def delete(self) -> None:
        if not self.alive:
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        self.alive = False


def link(
    a: Netns,
    b: Netns,
    name_a: str,
    name_b: str,
    addrs_a: Sequence[str] = (),
    addrs_b: Sequence[str] = (),
) -> None:
    """A veth pair between two namespaces, up, with the given addresses (CIDR)."""
    subprocess.run(
        [
            "ip",
            "link",
            "add",
            name_a,
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            name_b,
            "netns",
            b.name,
        ],
        check=True,
    )
    for ns, dev, addrs in ((a, name_a, addrs_a), (b, name_b, addrs_b)):
        for addr in addrs:
            extra = " nodad" if ":" in addr else ""
            ns.sh(f"ip addr add {addr} dev {dev}{extra}")
        ns.sh(f"ip link set {dev} up")


def leftover_namespaces() -> list[str]:
    """Namespaces this process made and did not delete (for a session-end check)."""
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    mine = f"hrneo-t{os.getpid()}-"
    return [line.split()[0] for line in out.splitlines() if line.startswith(mine)]
