"""hrneo: DNS-driven selective routing for Linux routers.

The core classes come from the compiled Rust module ``hrneo._core``:
:class:`NflogReader` (DNS answers copied by the kernel's NFLOG target),
:class:`NfqueueReader` (hold mode: answers held by NFQUEUE until accepted),
:class:`IpsetBatch` (batched ipset adds that report which addresses were new),
:class:`ConntrackFlusher` (deletes the conntrack entries of new addresses),
:class:`IpsetSession` (the kernel's set verbs), :class:`NftSetBatch` and
:class:`NftSetSession` (the same for nftables sets), :class:`Watchlist` (the
compiled domain matcher), and :class:`Plan` / :class:`Pipeline` (the daemon's
hot path, all in Rust). Errors are in :mod:`hrneo.errors`.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from hrneo._core import (
    ConntrackFlusher,
    DnsAnswer,
    DnsEvent,
    IpsetBatch,
    IpsetSession,
    NflogReader,
    NfqueueReader,
    NftSetBatch,
    NftSetSession,
    Pipeline,
    Plan,
    Watchlist,
    WatchMatch,
    __version__,
    ipset_add_message,
    nftset_add_message,
    parse_packet,
)
from hrneo.errors import HrneoError, IpsetError, NftSetError, SetError

__all__ = [
    "ConntrackFlusher",
    "DnsAnswer",
    "DnsEvent",
    "HrneoError",
    "IpsetBatch",
    "IpsetError",
    "IpsetSession",
    "NflogReader",
    "NfqueueReader",
    "NftSetBatch",
    "NftSetError",
    "NftSetSession",
    "Pipeline",
    "Plan",
    "SetError",
    "WatchMatch",
    "Watchlist",
    "__version__",
    "ipset_add_message",
    "nftset_add_message",
    "parse_packet",
]

# The set helpers of 0.1, kept working for scripts: each opens a session for one call.
_DEPRECATED = {
    "ipset_create": "create",
    "ipset_exists": "exists",
    "ipset_info": "info",
    "ipset_test": "test",
    "ipset_list": "members",
    "ipset_flush": "flush",
    "ipset_destroy": "destroy",
    "ipset_swap": "swap",
}


def __getattr__(name: str) -> Callable[..., Any]:
    verb = _DEPRECATED.get(name)
    if verb is None:
        raise AttributeError(f"module 'hrneo' has no attribute {name!r}")
    warnings.warn(
        f"hrneo.{name}() is deprecated: use `with hrneo.IpsetSession() as s: s.{verb}(...)`",
        DeprecationWarning,
        stacklevel=2,
    )

    def call(*args: Any, **kwargs: Any) -> Any:
        with IpsetSession() as session:
            return getattr(session, verb)(*args, **kwargs)

    return call
