"""Type stubs for hrneo._core, the compiled Rust core (see rust/py/)."""

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal, final

from typing_extensions import Self, TypeAlias

from hrneo.coretypes import IpsetInfo, NflogReaderStats, NfqueueReaderStats, NftSetInfo, PolicyLike
from hrneo.status import BlindReport, FlusherStats, PipelineStats
from hrneo.why import WhyRecord

__all__ = [
    "BLIND_CLIENTS",
    "WHY_RECORDS",
    "ConntrackFlusher",
    "DnsAnswer",
    "DnsEvent",
    "IpsetBatch",
    "IpsetSession",
    "NflogReader",
    "NfqueueReader",
    "NftSetBatch",
    "NftSetSession",
    "Pipeline",
    "Plan",
    "WatchMatch",
    "Watchlist",
    "__version__",
    "_ipset_canonical",
    "_ipset_check_name",
    "_ipset_reason",
    "_ipset_refusal",
    "ipset_add_message",
    "nft_refresh_mode",
    "nftset_add_message",
    "parse_packet",
]

__version__: str
WHY_RECORDS: int  # addresses Pipeline.why remembers at most
BLIND_CLIENTS: int  # clients Pipeline.blind_clients follows at most

class _Closeable:
    def close(self) -> None:
        """Release the sockets (and threads) now; later calls raise ValueError."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

# ---------------------------------------------------------------- DNS / NFLOG

@final
class DnsAnswer:
    """One resource record of the answer section."""

    name: str  # owner name, lower-case, no trailing dot
    rtype: str  # "A", "AAAA", "CNAME", ... (numeric types as "TYPE4242")
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
    answers: list[DnsAnswer]  # in wire order, only class-IN records reachable from qname
    chain: list[str]  # qname, then every CNAME and SVCB/HTTPS target on its chain, in order
    addresses: list[str]  # A/AAAA data of the chain, then SVCB/HTTPS hints; deduplicated
    hints: list[str]  # the addresses that came only from SVCB/HTTPS hints
    min_ttl: int  # smallest TTL on the chain (0 if there are no answers)
    packet_id: int | None  # NfqueueReader: the held packet's id, to accept it by; else None

def parse_packet(data: bytes) -> DnsEvent | None:
    """Parse one IPv4/IPv6 packet (UDP or TCP, port 53). None if it is not DNS."""

@final
class NflogReader(_Closeable):
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
    def stats(self) -> NflogReaderStats:
        """The capture socket's counters, what the packets were, and DNS over TCP."""

@final
class NfqueueReader(_Closeable):
    """Hold mode: reads DNS packets the kernel's NFQUEUE target queues
    (nfnetlink_queue) and holds each until it is accepted.

    The answer itself waits in the kernel, so whatever the caller does with an
    event (put its addresses in a set) happens before the client sees the answer.
    Every verdict is ACCEPT: nothing is dropped or changed. Packets with no DNS
    message in them are accepted at once; a packet not accepted within
    `hold_max_ms` (and anything queued while the reader does not read) is
    accepted by a deadline thread; a full socket lets packets through unread
    (fail-open, counted); `close()` accepts everything queued, then unbinds.
    """

    def __new__(
        cls,
        queue_num: int,
        *,
        hold_max_ms: int = 50,
        rcvbuf: int = 8 * 1024 * 1024,
        copy_range: int = 0xFFFF,
        maxlen: int = 65536,
    ) -> Self:
        """Bind queue `queue_num` (copy-packet mode, fail-open and GSO flags)."""
    @property
    def queue_num(self) -> int:
        """The queue this reader is bound to."""
    @property
    def notes(self) -> list[str]:
        """What the bind found missing in this kernel (the fail-open or GSO flag)."""
    def fileno(self) -> int: ...
    def read(self, max_events: int = 1024, timeout: float | None = None) -> list[DnsEvent]:
        """Drain queued packets and return the DNS messages among them, each with
        its `packet_id` (several messages of one TCP segment share it).

        timeout=None waits for the first packet; 0 does not wait; otherwise
        waits at most `timeout` seconds. Returns [] on timeout.
        """
    def accept(self, ids: list[int]) -> None:
        """Let the packets with these ids go on (ids released already are ignored)."""
    def accept_all(self) -> None:
        """Let every packet read so far go on."""
    def stats(self) -> NfqueueReaderStats:
        """The counters of NflogReader.stats(), and of holding (the hold times are
        those of the last 4096 packets, read to verdict)."""

# ---------------------------------------------------------------- ipset

@final
class IpsetBatch(_Closeable):
    """Queue addresses for one set; commit() adds them and returns the NEW ones."""

    @property
    def set_name(self) -> str: ...
    @property
    def timeout(self) -> int | None: ...
    def __new__(cls, set_name: str, *, timeout: int | None = None) -> Self: ...
    def add(self, ip: str) -> None:
        """Queue an IPv4/IPv6 address, or a network for hash:net sets. ValueError if unparsable."""
    def extend(self, ips: Iterable[str]) -> None:
        """Queue several; nothing is queued if one of them does not parse."""
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def commit(self) -> list[str]:
        """Send the queue to the kernel; return the addresses that were not present
        (or had expired). Present entries of a timeout set get their timeout refreshed.
        A refusal is hrneo.errors.IpsetError; its `new` lists the entries that went in
        as new all the same."""

@final
class IpsetSession(_Closeable):
    """A netlink session for the kernel's ipset verbs (one socket, reused)."""

    def __new__(cls) -> Self: ...
    def create(
        self,
        name: str,
        settype: Literal["hash:net", "hash:ip"] = "hash:net",
        family: Literal["inet", "inet6"] = "inet",
        *,
        timeout: int | None = None,
        maxelem: int | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Create a set; with `exist_ok`, a set of that name is kept as it is."""
    def exists(self, name: str) -> bool: ...
    def info(self, name: str) -> IpsetInfo: ...
    def test(self, name: str, ip: str) -> bool: ...
    def members(self, name: str) -> list[str]: ...
    def flush(self, name: str) -> None: ...
    def destroy(self, name: str) -> None: ...
    def swap(self, name_a: str, name_b: str) -> None: ...

def ipset_add_message(
    set_name: str,
    ips: list[str],
    *,
    timeout: int | None = None,
    excl: bool = True,
    seq: int = 1,
) -> bytes:
    """The ADD datagram IpsetBatch.commit() would send first (pure; no kernel)."""

def _ipset_canonical(text: str) -> str: ...
def _ipset_refusal(entry: str, family: str, settype: str) -> tuple[int, str] | None: ...
def _ipset_reason(code: int) -> str: ...
def _ipset_check_name(name: str) -> None: ...

# ---------------------------------------------------------------- nftables

_NftKey: TypeAlias = Literal["ipv4_addr", "ipv6_addr"]

@final
class NftSetBatch(_Closeable):
    """Queue addresses for one nftables set; commit() adds them and returns the NEW ones.

    `set_name` is dnsmasq's notation: `family#table#set`, `table#set` (inet), or a bare
    `set` in hrneo's own table `inet hrneo`. `refresh`: how a present element gets its
    timeout reset ("auto": learned from the kernel at the first refresh; "update": a
    plain add, Linux 6.12+; "readd": delete and add in one transaction, any kernel)."""

    @property
    def set_name(self) -> str:
        """The set as `family#table#set`."""
    @property
    def timeout(self) -> int | None: ...
    @property
    def refresh(self) -> Literal["auto", "update", "readd"]: ...
    def __new__(
        cls,
        set_name: str,
        *,
        timeout: int | None = None,
        refresh: Literal["auto", "update", "readd"] = "auto",
    ) -> Self: ...
    def add(self, ip: str) -> None:
        """Queue an IPv4/IPv6 address, or a network for interval sets. ValueError if unparsable."""
    def extend(self, ips: Iterable[str]) -> None:
        """Queue several; nothing is queued if one of them does not parse."""
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def commit(self) -> list[str]:
        """Send the queue to the kernel; return the addresses that were not present
        (or had expired). Present entries of a timeout set get their timeout reset.
        A refusal is hrneo.errors.NftSetError; its `new` lists the entries that went in
        as new all the same."""

@final
class NftSetSession(_Closeable):
    """A netlink session for the kernel's nftables set verbs (one socket, reused).
    Sets are named as NftSetBatch names them."""

    def __new__(cls) -> Self: ...
    def create(
        self,
        set_name: str,
        key: _NftKey = "ipv4_addr",
        *,
        interval: bool = True,
        timeout: int | None = None,
        size: int | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Create an address set (and its table, if missing). `timeout`: None, no
        timeouts; 0, timeouts without a default; else the default in seconds.
        With `exist_ok`, a set of that name is kept as it is."""
    def exists(self, set_name: str) -> bool: ...
    def table_exists(self, family: str, table: str) -> bool: ...
    def create_table(self, family: str, table: str) -> None: ...
    def info(self, set_name: str) -> NftSetInfo: ...
    def test(self, set_name: str, ip: str) -> bool:
        """Whether `ip` is in the set (in an interval set: inside one of its intervals)."""
    def members(self, set_name: str) -> list[str]:
        """Addresses, networks as "a/len", other ranges as "a-b"."""
    def expiries(self, set_name: str) -> list[tuple[str, float | None]]:
        """Each member and the seconds it has left (None: it never expires)."""
    def flush(self, set_name: str) -> None: ...
    def destroy(self, set_name: str) -> None: ...

def nftset_add_message(
    set_name: str,
    ips: list[str],
    *,
    interval: bool = True,
    timeout: int | None = None,
    seq: int = 1,
    per_message: int = 256,
) -> bytes:
    """The transaction NftSetBatch.commit() sends for absent entries (pure): BEGIN,
    NEWSETELEM messages of up to `per_message` entries (the last acked), END."""

def nft_refresh_mode() -> Literal["update", "readd"] | None:
    """How this kernel resets a present element's timeout, once a commit in this
    process had to (None before)."""

# ---------------------------------------------------------------- conntrack

@final
class ConntrackFlusher(_Closeable):
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
    def stats(self) -> FlusherStats: ...

# ---------------------------------------------------------------- watchlist

@final
class WatchMatch:
    """The watched domain a name (or chain of names) goes to."""

    policy: int  # index of the policy in the config
    name: str  # the name that matched
    domain: str  # the watched domain it equals or is under
    source: str  # the file the domain was written in
    line: int  # its line there (0: unknown)

@final
class Watchlist:
    """Every policy's domains in one suffix matcher: a name matches a domain it
    equals or is under (label boundaries); the most specific domain wins."""

    def __new__(cls) -> Self: ...
    def add_source(self, path: str) -> int:
        """Register a file domains come from; returns its index for `add`."""
    def add(
        self, domain: str, policy: int, source: int = 0, line: int = 0
    ) -> tuple[int, int, int] | None:
        """Add a normalized domain; None if new, else (policy, source, line) of the
        first, which keeps it. ValueError for text that is not a normalized domain."""
    def set_source(self, index: int, path: str) -> None:
        """Name source `index` anew (a converted or moved file)."""
    def shrink_to_fit(self) -> None: ...
    def match(self, name: str) -> WatchMatch | None: ...
    def policy_of(self, name: str) -> int:
        """The policy index of `name`, -1 if it is on no watchlist."""
    def match_chain(self, names: list[str]) -> WatchMatch | None:
        """The match of an answer's names (question, CNAME and SVCB targets): the
        most labels, then the longest, then the earliest name."""
    def domains(self, policy: int) -> list[str]: ...
    def count(self, policy: int) -> int: ...
    @property
    def sources(self) -> list[str]: ...
    def heap_bytes(self) -> int: ...
    def __len__(self) -> int: ...

# ---------------------------------------------------------------- pipeline

@final
class Plan:
    """A config compiled for the pipeline: watchlist, each policy's sets, a writer per set."""

    def __new__(
        cls,
        watchlist: Watchlist,
        policies: Iterable[PolicyLike],
        *,
        backend: Literal["ipset", "nftables"] = "ipset",
    ) -> Self:
        """`backend`: the policies' ipset/ipset6 (ipset) or nft_set4/nft_set6 (nftables)."""
    @property
    def backend(self) -> Literal["ipset", "nftables"]: ...
    def prepare(self) -> list[str]:
        """Create missing sets, check families, decide timeouts, add static entries;
        returns the lines to log."""
    def restore(self, state: dict[str, Sequence[tuple[str, int]]]) -> tuple[int, list[str]]:
        """Put saved entries back after prepare(): set name -> (entry, seconds left).
        Returns how many went in, and lines to log of sets that refused some."""

@final
class Pipeline(_Closeable):
    """The hot path: capture source, plan and conntrack thread, run with the GIL released."""

    def __new__(
        cls,
        plan: Plan,
        *,
        nflog_group: int = 100,
        rcvbuf: int = 4 * 1024 * 1024,
        conntrack: Literal["events", "dump", "off"] = "events",
        capture: Literal["nflog", "nfqueue"] = "nflog",
        nfqueue_num: int = 100,
        hold_max_ms: int = 50,
    ) -> Self:
        """capture="nflog" reads copies from group `nflog_group`; "nfqueue" holds
        each answer in queue `nfqueue_num` until its addresses are in the sets
        (unwatched ones go at once; `hold_max_ms` at most)."""
    def run(
        self, timeout: float, wake_fd: int | None = None
    ) -> Literal["timeout", "wake", "signal", "notes"]:
        """Process packets as they come for at most `timeout` seconds; return early
        when `wake_fd` is readable, a signal arrived or a warning waits."""
    def process_queued(self) -> int: ...
    def swap_plan(self, plan: Plan) -> None: ...
    def swap_source(
        self,
        number: int,
        *,
        capture: Literal["nflog", "nfqueue"] = "nflog",
        hold_max_ms: int = 50,
        rcvbuf: int = 4 * 1024 * 1024,
    ) -> None:
        """Read NFLOG group or queue `number` from now on; the old source's queued
        packets are processed first (a queue accepts what it holds, then unbinds)."""
    def why(self, address: str) -> list[WhyRecord]:
        """What brought `address` into each set it was learned into (set, policy,
        qname, names, rule, first_seen, last_seen, answers, added); [] when no
        answer among the last WHY_RECORDS addresses learned carried it."""
    def set_dns_blind(self, on: bool) -> None:
        """Turn DNS-blind counting off (the counts so far are dropped) or on."""
    def blind_clients(self) -> BlindReport | None:
        """Per LAN client: new connections to outside addresses, and those to
        addresses no answer seen contained (most of the latter first; at most
        BLIND_CLIENTS clients); None when not counted (off, or no conntrack events)."""
    def flushed_for(self, address: str) -> int:
        """Conntrack entries deleted for `address` so far (as a new address)."""
    def set_hold_max(self, hold_max_ms: int) -> bool:
        """A new longest hold (hold mode), from the deadline's next tick on; False
        if the source holds nothing."""
    def prepare(self) -> list[str]: ...
    def learned(self) -> dict[str, list[tuple[str, int]]]:
        """Per set name: the members with time left that are no static entry, each
        with its seconds left (one dump per set, the GIL released)."""
    def restore(self, state: dict[str, Sequence[tuple[str, int]]]) -> tuple[int, list[str]]:
        """Put saved entries back: set name -> (entry, seconds left). Unknown sets,
        timeout-0 policies, statics and the other family are skipped; times are
        capped at the policy's timeout; an entry already in its set keeps its own.
        Returns how many went in, and lines to log of sets that refused some."""
    def set_trusted(self, nets: list[str]) -> None:
        """Only answers from these addresses/networks count from now on ([]: any source)."""
    def set_protected(self, nets: list[str]) -> None:
        """Addresses in these networks never go into a set (besides the classes that
        route nowhere: unspecified, loopback, link-local, multicast, broadcast)."""
    def set_verbose(self, verbose: bool) -> None: ...
    def take_notes(self) -> list[tuple[int, str]]:
        """(logging level, line) queued since the last call."""
    def stats(self) -> PipelineStats: ...
    def wait_flushed(self, timeout: float) -> bool: ...
