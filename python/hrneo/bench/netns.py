"""A private network namespace for the benchmarks (root only).

Deliberately small and separate from the test suite's helper: the benchmark
ships with the package, the tests do not.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from typing import Union

log = logging.getLogger(__name__)

Cmd = Union[str, Sequence[str]]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class BenchNetns:
    """A namespace (default name ``hrneo-bench-<pid>``), lo up, removed by :meth:`delete`."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"hrneo-bench-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.alive = True
        self.sh("ip link set lo up")

    def argv(self, cmd: Cmd) -> list[str]:
        """The `ip netns exec` command line for `cmd`."""
        words = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return ["ip", "netns", "exec", self.name, *words]

    def sh(self, cmd: Cmd, stdin: str | None = None, check: bool = True) -> str:
        """Run a command inside the namespace; return its stdout. With `check`, a
        failure raises with its stderr."""
        argv = self.argv(cmd)
        proc = subprocess.run(
            argv, check=False, input=stdin, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"[{self.name}] {argv!r} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Move the calling thread (and processes it starts) into the namespace."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.name}") as ns:
            _setns(ns.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def delete(self) -> None:
        """Kill what runs inside and remove the namespace (its sets and entries go with it)."""
        if not self.alive:
            return
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], check=False, capture_output=True, text=True
        )
        for pid in out.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
        self.alive = False
        log.debug("deleted namespace %s", self.name)
