"""Type stubs for hrneo._core, the compiled Rust core (see rust/py/)."""

from collections.abc import Iterable
from types import TracebackType
from typing import final

from typing_extensions import Self

__all__ = [
    "ConntrackFlusher",
    "DnsAnswer",
    "DnsEvent",
    "IpsetBatch",
    "IpsetError",
    "NflogReader",
    "__version__",
    "ipset_add_message",
    "ipset_create",
    "ipset_destroy",
    "ipset_exists",
    "ipset_flush",
    "ipset_info",
    "ipset_list",
    "ipset_swap",
    "ipset_test",
    "parse_packet",
]

__version__: str

class IpsetError(OSError):
    """The kernel refused an ipset request (errno = the kernel's code)."""

    set_name: str
    new: list[str]  # from IpsetBatch.commit(): entries that were new despite the error

# ---------------------------------------------------------------- DNS / NFLOG

@final
class DnsAnswer:
    """One resource record of the answer section."""

    name: str  # owner name, lower-case, no trailing dot
    rtype: str  # "A", "AAAA", "CNAME", ... (numeric types as "TYPE65")
    ttl: int
    data: str  # address text for A/AAAA, target name for CNAME, else the record's text

@final
class DnsEvent:
    """A parsed DNS message seen on the wire."""

    is_response: bool
    txid: int
    rcode: int
    qname: str  # lower-case, no trailing dot ("" if the message has no question)
    qtype: str
    src: str  # IP addresses as text
    dst: str
    sport: int
    dport: int
    transport: str  # "udp" or "tcp"
    answers: list[DnsAnswer]  # in wire order, only records reachable from qname
    chain: list[str]  # qname followed by every CNAME target on its chain, in order
    addresses: list[str]  # A/AAAA data reachable from qname through the chain, deduplicated
    min_ttl: int  # smallest TTL on the chain (0 if there are no answers)

def parse_packet(data: bytes) -> DnsEvent | None:
    """Parse one IPv4/IPv6 packet (UDP or TCP, port 53). None if it is not DNS."""

@final
class NflogReader:
    """Reads DNS packets copied by the kernel's NFLOG target (nfnetlink_log)."""

    def __new__(
        cls,
        group: int,
        *,
        rcvbuf: int = 4 * 1024 * 1024,
        copy_range: int = 0xFFFF,
        qthresh: int = 1,
        flush_timeout: int = 0,
    ) -> Self:
        """Bind nflog group `group` for IPv4 and IPv6.

        `qthresh` / `flush_timeout` (1/100 s) let the kernel batch packets;
        the defaults deliver each packet at once.
        """
    @property
    def group(self) -> int:
        """The NFLOG group this reader is bound to."""
    def fileno(self) -> int: ...
    def read(self, max_events: int = 1024, timeout: float | None = None) -> list[DnsEvent]:
        """Drain queued packets and return the DNS messages among them.

        timeout=None waits for the first packet; 0 does not wait; otherwise
        waits at most `timeout` seconds. Returns [] on timeout.
        """
    def stats(self) -> dict[str, int]:
        """Counters: packets, dns, malformed, incomplete, non_dns, dropped, enobufs, ..."""
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

# ---------------------------------------------------------------- ipset

@final
class IpsetBatch:
    """Queue addresses for one set; commit() adds them and returns the NEW ones."""

    set_name: str
    timeout: int | None

    def __new__(cls, set_name: str, *, timeout: int | None = None) -> Self: ...
    def add(self, ip: str) -> None:
        """Queue an IPv4/IPv6 address, or a network for hash:net sets. ValueError if unparsable."""
    def extend(self, ips: Iterable[str]) -> None: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def commit(self) -> list[str]:
        """Send the queue to the kernel; return the addresses that were not present
        (or had expired). Present entries of a timeout set get their timeout refreshed."""

def ipset_create(
    name: str,
    settype: str = "hash:net",
    family: str = "inet",
    *,
    timeout: int | None = None,
    maxelem: int | None = None,
    exist_ok: bool = False,
) -> None: ...
def ipset_exists(name: str) -> bool: ...
def ipset_info(name: str) -> dict[str, str | int | None]:
    """type, family ("inet"/"inet6"), timeout (None if the set has none), maxelem, size, entries."""

def ipset_test(name: str, ip: str) -> bool: ...
def ipset_list(name: str) -> list[str]: ...
def ipset_flush(name: str) -> None: ...
def ipset_destroy(name: str) -> None: ...
def ipset_swap(name_a: str, name_b: str) -> None: ...
def ipset_add_message(
    set_name: str,
    ips: list[str],
    *,
    timeout: int | None = None,
    excl: bool = True,
    seq: int = 1,
) -> bytes:
    """The ADD datagram IpsetBatch.commit() would send first (pure; no kernel)."""

# ---------------------------------------------------------------- conntrack

@final
class ConntrackFlusher:
    """Deletes conntrack entries by destination address (one dump per family per call).

    With `track=True` it also listens to conntrack NEW/DESTROY events and keeps an
    index, so a flush is a lookup; when events were lost (or the subscription was
    refused: stats()["tracking"] == 0) a flush does the one dump and rebuilds the
    index. `event_rcvbuf` (bytes) is for tests."""

    def __new__(cls, *, track: bool = False, event_rcvbuf: int | None = None) -> Self: ...
    def flush(self, ips: Iterable[str]) -> int:
        """Delete every entry whose original destination or reply source is in `ips`.
        Returns the number of entries deleted."""
    def fileno(self) -> int | None:
        """The event socket (readable when events are queued); None when not tracking."""
    def poll_events(self) -> int:
        """Read the queued events into the index; returns how many (0 when not tracking)."""
    def stats(self) -> dict[str, int]:
        """calls, dumped, matched, deleted, already_gone, errors, unparsed, tracking,
        index_entries, events, resyncs (initial dump included), lost (ENOBUFS),
        index_lookups (flushes without a dump), index_full."""
