"""ipset management for the daemon and for users, and the backend choice.

The netlink path (``hrneo._core``) is the normal one. The ``ipset`` /
``conntrack`` programs (:mod:`hrneo.fallback`) are used only when a netfilter
netlink socket cannot be opened at all, and that is logged once.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from hrneo import _core

if TYPE_CHECKING:
    from hrneo.fallback import CliConntrackFlusher, CliIpsetBatch

log = logging.getLogger(__name__)

__all__ = [
    "Batch",
    "Flusher",
    "create",
    "destroy",
    "exists",
    "flush",
    "info",
    "members",
    "open_batch",
    "open_conntrack_flusher",
    "swap",
    "test",
]

# socket() failing with one of these means "no netfilter netlink here";
# anything else (ENOENT for a missing set...) is a real error, not a reason to fall back.
_NO_NETLINK = frozenset({errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EACCES, errno.EPERM})
_fallback_logged: set[str] = set()


class Batch(Protocol):
    """What the daemon needs of an ipset batch (netlink or CLI)."""

    def add(self, ip: str) -> None: ...
    def extend(self, ips: Iterable[str]) -> None: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def commit(self) -> list[str]: ...


class Flusher(Protocol):
    """What the daemon needs of a conntrack flusher (netlink or CLI)."""

    def flush(self, ips: Iterable[str]) -> int: ...


def _netlink_unavailable(exc: OSError) -> bool:
    # IpsetError is an OSError too, but it means the kernel answered: netlink works.
    return not isinstance(exc, _core.IpsetError) and exc.errno in _NO_NETLINK


def _log_fallback_once(what: str, exc: OSError) -> None:
    if what not in _fallback_logged:
        _fallback_logged.add(what)
        log.warning("netlink unavailable for %s (%s): using the command-line fallback", what, exc)


def open_batch(set_name: str, timeout: int | None = None) -> _core.IpsetBatch | CliIpsetBatch:
    """An :class:`IpsetBatch` for `set_name`, or the CLI fallback if netlink cannot be opened."""
    try:
        return _core.IpsetBatch(set_name, timeout=timeout)
    except OSError as exc:
        if not _netlink_unavailable(exc):
            raise
        _log_fallback_once("ipset", exc)
    from hrneo.fallback import CliIpsetBatch

    return CliIpsetBatch(set_name, timeout=timeout)


def open_conntrack_flusher(*, track: bool = False) -> _core.ConntrackFlusher | CliConntrackFlusher:
    """A :class:`ConntrackFlusher`, or the ``conntrack`` program if netlink cannot be opened.

    `track=True` asks for the event-fed index (see ``ConntrackFlusher``); the CLI
    fallback ignores it.
    """
    try:
        return _core.ConntrackFlusher(track=track)
    except OSError as exc:
        if not _netlink_unavailable(exc):
            raise
        _log_fallback_once("conntrack", exc)
    from hrneo.fallback import CliConntrackFlusher

    return CliConntrackFlusher(track=track)


def create(
    name: str,
    settype: str = "hash:net",
    family: str = "inet",
    *,
    timeout: int | None = None,
    maxelem: int | None = None,
    exist_ok: bool = False,
) -> None:
    """Create a hash:ip or hash:net set; with `exist_ok`, an existing set of that name is kept as is."""
    _core.ipset_create(name, settype, family, timeout=timeout, maxelem=maxelem, exist_ok=exist_ok)


def exists(name: str) -> bool:
    """Whether a set called `name` exists."""
    return _core.ipset_exists(name)


def info(name: str) -> dict[str, str | int | None]:
    """The set's type, family, timeout (None without timeout support), maxelem, size, entries."""
    return _core.ipset_info(name)


def test(name: str, ip: str) -> bool:
    """Whether `ip` (an address, or a network for hash:net) is in the set."""
    return _core.ipset_test(name, ip)


def members(name: str) -> list[str]:
    """The set's members as text; networks as ``a/len``, single addresses without a prefix."""
    return _core.ipset_list(name)


def flush(name: str) -> None:
    """Remove every member of the set."""
    _core.ipset_flush(name)


def destroy(name: str) -> None:
    """Destroy the set (fails if a firewall rule still references it)."""
    _core.ipset_destroy(name)


def swap(name_a: str, name_b: str) -> None:
    """Exchange the contents (and names) of two sets of the same type."""
    _core.ipset_swap(name_a, name_b)
