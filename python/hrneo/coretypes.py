"""Types the compiled core's stub (``_core.pyi``) names and Python code may
use: the dicts the set sessions and the standalone readers return, and what a
``Plan`` reads of each policy. The counters the daemon reports (the
pipeline's, its flusher's) are in :mod:`hrneo.status`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypedDict

from hrneo.status import CaptureStats


class NflogReaderStats(CaptureStats):
    """``NflogReader.stats()``: the capture socket's counters (its ``malformed``
    counts broken DNS messages too), what the packets were, and DNS over TCP put
    back together from its segments (``TcpStats``' counters, ``tcp_`` before each)."""

    dns: int  # DNS messages decoded (a TCP segment may carry several)
    responses: int
    queries: int
    incomplete: int  # cut short: a first fragment, a truncated copy, a partial TCP message
    non_dns: int  # other ports or protocols, later fragments, bare TCP segments
    tcp_reassembled: int
    tcp_flows: int
    tcp_gaps: int
    tcp_unfinished: int
    tcp_dropped_bytes: int


class NfqueueReaderStats(NflogReaderStats):
    """``NfqueueReader.stats()``: a reader's counters and those of holding
    (``HoldStats``' counters; ``hold_`` before the timeouts and the hold times)."""

    held: int
    released: int
    outstanding: int
    hold_timeouts: int
    fail_opens: int
    verdict_errors: int
    hold_p50_us: int
    hold_p99_us: int
    hold_max_us: int


class IpsetInfo(TypedDict):
    """``IpsetSession.info()``: what the kernel tells of a set (None: not told)."""

    name: str
    type: str  # "hash:ip", "hash:net", ...
    revision: int
    family: str  # "inet" or "inet6"
    timeout: int | None  # the default timeout; None: the set has no timeouts
    maxelem: int | None
    hashsize: int | None
    size: int | None  # bytes of kernel memory
    references: int | None
    entries: int


class NftSetInfo(TypedDict):
    """``NftSetSession.info()``: what the kernel tells of an nftables set."""

    family: str
    table: str
    name: str
    key: str  # "ipv4_addr", "ipv6_addr", else "type N (M bytes)"
    interval: bool
    timeout: bool  # the set has `flags timeout`
    default_timeout: float | None  # seconds; None: no default
    size: int | None  # None: no limit
    handle: int | None
    entries: int


class PolicyLike(Protocol):
    """What ``Plan`` reads of a policy (``hrneo.config.Policy`` has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def ipset(self) -> str: ...
    @property
    def ipset6(self) -> str | None: ...
    @property
    def nft_set4(self) -> str: ...
    @property
    def nft_set6(self) -> str | None: ...
    @property
    def timeout(self) -> int: ...
    @property
    def maxelem(self) -> int | None: ...
    @property
    def reconnect(self) -> bool: ...
    @property
    def static(self) -> Sequence[str]: ...
