"""The daemon's pid file (``hrneo run --pidfile``): written once the daemon is up,
removed at stop. The init scripts and firmware hooks read it, and check that
the pid is really hrneo before they signal it."""

from __future__ import annotations

import contextlib
import os


def write_pidfile(path: str) -> None:
    """Write this process's pid to `path` atomically (a reader never sees half)."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pidfile(path: str) -> None:
    """Remove `path` if it still names this process (a newer daemon may own it)."""
    try:
        with open(path, encoding="ascii") as f:
            pid = f.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return
    if pid == str(os.getpid()):
        with contextlib.suppress(OSError):
            os.unlink(path)
