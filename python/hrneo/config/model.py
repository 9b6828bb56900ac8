"""The validated config as frozen dataclasses, and its defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hrneo._core import Watchlist
from hrneo.nftnames import own_set

DEFAULT_CONFIG_PATH = "/opt/etc/hrneo/hrneo.yaml"
DEFAULT_SOCKET_PATH = "/run/hrneo.sock"
DEFAULT_NFLOG_GROUP = 100
# How answers reach the daemon: a copy (nflog) or the answer itself, held (nfqueue).
CAPTURE_MODES = ("nflog", "nfqueue")
DEFAULT_NFQUEUE_NUM = 100
DEFAULT_HOLD_MAX_MS = 50
HOLD_MAX_MS_RANGE = (1, 60_000)
# Answers from the router's own resolver to LAN clients leave through OUTPUT;
# answers from an upstream resolver to clients (no local resolver) cross FORWARD.
DEFAULT_DNS_CHAINS = ("OUTPUT", "FORWARD")
DEFAULT_TIMEOUT = 3600
DEFAULT_RECHECK_INTERVAL = 30.0
# recheck_interval: a floor against busy loops of iptables calls, a ceiling of a day.
RECHECK_INTERVAL_RANGE = (1.0, 86400.0)
# Lists from URLs (domain_urls) are fetched again this often, in seconds.
DEFAULT_LIST_REFRESH = 86400
# What the daemon keeps across restarts: the last good copy of each URL list
# (and the learned addresses). Entware keeps its state under /opt.
DEFAULT_STATE_DIR = "/opt/var/lib/hrneo" if os.path.isdir("/opt/etc") else "/var/lib/hrneo"
DEFAULT_LIST_CACHE = os.path.join(DEFAULT_STATE_DIR, "lists")
# The learned addresses, with the time each has left (hrneo.statefile), written
# every state_interval seconds when something was learned since, and at stop.
DEFAULT_STATE_FILE = os.path.join(DEFAULT_STATE_DIR, "state.json")
DEFAULT_STATE_INTERVAL = 300
# hrneo's `ip rule`s all sit at this priority, so a restart after a crash can
# recognise (and delete) the ones it left behind.
DEFAULT_RULE_PRIORITY = 9000
# Where sets live and rules go: ipset + iptables, nftables, or chosen at start.
BACKENDS = ("ipset", "nftables", "auto")
DEFAULT_BACKEND = "ipset"


@dataclass(frozen=True)
class Route:
    """Policy routing for one policy's sets: mark -> ip rule -> table -> default route."""

    interface: str
    table: int
    mark: int
    gateway: str | None = None
    gateway6: str | None = None
    priority: int = DEFAULT_RULE_PRIORITY
    # Bits of the packet mark hrneo owns: the rest stay as the firmware set them
    # (Keenetic and OpenWrt use marks of their own).
    mask: int = 0xFFFFFFFF
    # An `unreachable` default in the table below the real one: while the
    # interface is gone, marked traffic is refused instead of taking the main
    # table's route out of the WAN. Off by default: see the README ("Trust").
    kill_switch: bool = False


@dataclass(frozen=True)
class Policy:
    """One watchlist and the sets its answers' addresses go to.

    The domains themselves live in the config's compiled :class:`Watchlist`
    (about 40 bytes each, not a Python string each); `index` is this policy's
    number there. A domain listed by two policies stays with the first.
    """

    name: str
    ipset: str
    ipset6: str | None = None
    # backend nftables: `nftset` as written (dnsmasq notation), and the
    # `family#table#set` of its IPv4 / IPv6 set.
    nftset: str | None = None
    nft4: str | None = None
    nft6: str | None = None
    timeout: int = DEFAULT_TIMEOUT
    reconnect: bool = True
    maxelem: int | None = None
    domain_files: tuple[str, ...] = ()
    # Lists fetched over http(s) by the daemon (hrneo.listfetch), not read here.
    domain_urls: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    route: Route | None = None
    # The LAN devices the route is for (addresses and networks, as `static`
    # writes them); () = every device and the router itself.
    clients: tuple[str, ...] = ()
    line: int = 0
    index: int = 0
    watchlist: Watchlist | None = field(default=None, repr=False, compare=False)

    @property
    def nft_set4(self) -> str:
        """The IPv4 set with backend nftables: from `nftset`, else `ipset` in inet hrneo."""
        return self.nft4 or own_set(self.ipset)

    @property
    def nft_set6(self) -> str | None:
        """The IPv6 set with backend nftables: from `nftset`, else `ipset6` in inet hrneo."""
        if self.nft6:
            return self.nft6
        return own_set(self.ipset6) if self.ipset6 else None

    def clients_of(self, family: int) -> tuple[str, ...]:
        """The `clients` of IP version `family` (4 or 6)."""
        return tuple(c for c in self.clients if (":" in c) == (family == 6))

    @property
    def domains(self) -> tuple[str, ...]:
        """The policy's domains, in the order they were written."""
        return () if self.watchlist is None else tuple(self.watchlist.domains(self.index))

    @property
    def domain_count(self) -> int:
        """How many domains the policy has."""
        return 0 if self.watchlist is None else self.watchlist.count(self.index)

    def origin(self, i: int) -> str:
        """`file:line` where domains[i] was written."""
        assert self.watchlist is not None
        m = self.watchlist.match(self.domains[i])
        assert m is not None
        return f"{m.source}:{m.line}"


@dataclass(frozen=True)
class FirewallConfig:
    """How the daemon manages netfilter rules and routes."""

    manage_rules: bool = True
    dns_chains: tuple[str, ...] = DEFAULT_DNS_CHAINS
    ipv6: bool = True
    # Capture rules take only replies of flows conntrack has seen start with a
    # query (`--ctstate ESTABLISHED --ctdir REPLY`): no unsolicited "answers".
    verify_answers: bool = True
    recheck_interval: float = DEFAULT_RECHECK_INTERVAL
    rule_priority: int = DEFAULT_RULE_PRIORITY
    iptables: str = "iptables"
    ip6tables: str = "ip6tables"
    ip: str = "ip"
    nft: str = "nft"


@dataclass(frozen=True)
class Config:
    """A validated hrneo config."""

    path: str
    nflog_group: int = DEFAULT_NFLOG_GROUP
    capture: str = "nflog"
    nfqueue_num: int = DEFAULT_NFQUEUE_NUM
    # Hold mode: an answer waits at most this long for its commit, then passes anyway.
    hold_max_ms: int = DEFAULT_HOLD_MAX_MS
    backend: str = DEFAULT_BACKEND
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    policies: tuple[Policy, ...] = ()
    control_socket: str = DEFAULT_SOCKET_PATH
    # Keep a conntrack index from kernel events, so a flush needs no table dump.
    conntrack_events: bool = True
    # Count, per LAN client, new connections to addresses no answer contained.
    dns_blind: bool = True
    list_refresh: int = DEFAULT_LIST_REFRESH  # seconds between fetches of domain_urls; 0 = once
    list_cache: str = DEFAULT_LIST_CACHE  # where the last good copy of each URL list is kept
    state_file: str | None = DEFAULT_STATE_FILE  # None: learned addresses die with the sets
    state_interval: int = DEFAULT_STATE_INTERVAL  # seconds between writes; 0 = at stop only
    # Only answers from these sources count (CIDR text, "203.0.113.53/32"); () = any.
    trusted_resolvers: tuple[str, ...] = ()
    log: str = "stderr"  # or "syslog" (through /dev/log)
    # Prometheus endpoint (address, port); only loopback unless metrics_allow_remote.
    metrics_listen: tuple[str, int] | None = None
    metrics_allow_remote: bool = False
    watchlist: Watchlist = field(default_factory=Watchlist, repr=False, compare=False)

    @property
    def capture_number(self) -> int:
        """The NFLOG group or the queue number answers are read from."""
        return self.nfqueue_num if self.capture == "nfqueue" else self.nflog_group
