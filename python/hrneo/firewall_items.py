"""What the iptables backend installs for a config: iptables rules, `ip rule`s and
table routes as values (compared, hashed, diffed on reload), and their text.
:class:`hrneo.firewall.Firewall` puts them in place; the nftables backend takes
the `ip rule`s and routes from here too (:func:`route_items`).

Capture rules go FIRST in their chains (`-I CHAIN 1`): the firmware's own
rules (Keenetic, OpenWrt fw4) accept established traffic early, and an NFLOG
rule after them would see nothing. Being first, they would also see what the
firewall drops a moment later (a forged "answer" from the Internet to a LAN
host's public IPv6 address); so with `verify_answers` (the default) every
capture rule checks the packet itself: `-m conntrack --ctstate ESTABLISHED
--ctdir REPLY` takes only replies of a flow whose first packet went to port 53
through (or from) this router. Where iptables has no conntrack match, the rules
go in without it and a warning says what that means.

`kill_switch` routes add an `unreachable default` at metric
:data:`KILL_SWITCH_METRIC` to the policy's table: while the interface is down
(its own default route gone), marked packets meet that route instead of falling
through to the main table and out of the WAN. `unreachable` rather than
`blackhole`: the client gets an ICMP error (or EHOSTUNREACH) at once and can
give up or try another address, instead of waiting for a timeout.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection
from dataclasses import dataclass
from typing import Union

from hrneo.config import Config, Policy, Route

COMMENT_PREFIX = "hrneo:"
# Lower preference than the table's own default route (metric 0, IPv6 1024).
KILL_SWITCH_METRIC = 2147483647
VERIFY_SPEC = ("-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY")


@dataclass(frozen=True)
class IptRule:
    """One iptables/ip6tables rule: `spec` is everything after the chain."""

    family: int  # 4 or 6
    table: str
    chain: str
    spec: tuple[str, ...]
    essential: bool = False  # capture rules: without them the daemon sees nothing
    verified: bool = False  # carries VERIFY_SPEC (the conntrack match)


@dataclass(frozen=True)
class IpRule:
    """`ip rule add fwmark MARK/MASK table T priority P`."""

    family: int
    mark: int
    table: int
    priority: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class TableRoute:
    """The default route of a policy's table."""

    family: int
    table: int
    interface: str
    gateway: str | None


@dataclass(frozen=True)
class BlockRoute:
    """The kill switch: `unreachable default metric KILL_SWITCH_METRIC` in a table."""

    family: int
    table: int


Item = Union[IptRule, IpRule, TableRoute, BlockRoute]


def capture_target(cfg: Config) -> tuple[str, ...]:
    """Where a DNS answer goes: a copy to the NFLOG group, or (hold mode) the
    answer itself to the queue, passed on when no daemon listens."""
    if cfg.capture == "nfqueue":
        return ("-j", "NFQUEUE", "--queue-num", str(cfg.nfqueue_num), "--queue-bypass")
    return ("-j", "NFLOG", "--nflog-group", str(cfg.nflog_group))


def route_items(cfg: Config) -> list[Item]:
    """The `ip rule`s and table routes of `cfg` alone (the nftables backend's share)."""
    return [i for i in desired_items(cfg) if not isinstance(i, IptRule)]


def mark_rules(pol: Policy, family: int, setname: str, route: Route) -> list[IptRule]:
    """The MARK rules of one policy and family, in mangle: PREROUTING for what the
    router forwards, OUTPUT for its own traffic. With `clients`, one PREROUTING
    rule per client network of the family (none: the family is marked for no
    one) and no OUTPUT rule: the router is not one of the listed devices."""
    spec = (
        "-m", "set", "--match-set", setname, "dst",
        "-m", "comment", "--comment", f"{COMMENT_PREFIX}{pol.name}",
        "-j", "MARK", "--set-xmark", f"{route.mark:#x}/{route.mask:#x}",
    )  # fmt: skip
    if not pol.clients:
        return [IptRule(family, "mangle", chain, spec) for chain in ("PREROUTING", "OUTPUT")]
    return [
        IptRule(family, "mangle", "PREROUTING", ("-s", net, *spec))
        for net in pol.clients_of(family)
    ]


def desired_items(cfg: Config, unverified: Collection[int] = ()) -> list[Item]:
    """What the daemon installs for `cfg`, in install order.

    `unverified`: the families whose iptables has no conntrack match; their
    capture rules go in without it.
    """
    fw = cfg.firewall
    families = (4, 6) if fw.ipv6 else (4,)
    items: list[Item] = []
    for family in families:
        verify = fw.verify_answers and family not in unverified
        for chain in fw.dns_chains:
            for proto in ("udp", "tcp"):
                spec = (
                    "-p", proto, "--sport", "53", *(VERIFY_SPEC if verify else ()),
                    "-m", "comment", "--comment", f"{COMMENT_PREFIX}dns", *capture_target(cfg),
                )  # fmt: skip
                items.append(
                    IptRule(family, "filter", chain, spec, essential=True, verified=verify)
                )
    for pol in cfg.policies:
        route = pol.route
        if route is None:
            continue
        for family in families:
            setname = pol.ipset if family == 4 else pol.ipset6
            if setname is None:
                continue
            items += mark_rules(pol, family, setname, route)
            if route.kill_switch:
                # Before the ip rule: the table never sends marked traffic on unblocked.
                items.append(BlockRoute(family, route.table))
            items.append(IpRule(family, route.mark, route.table, route.priority, route.mask))
            gw = route.gateway if family == 4 else route.gateway6
            if gw is None and route.gateway is not None and family == 6:
                continue  # broadcast link without an IPv6 next hop: config warned
            items.append(TableRoute(family, route.table, route.interface, gw))
    return items


def describe(item: Item) -> str:
    """Human text for log lines."""
    if isinstance(item, IptRule):
        prog = "iptables" if item.family == 4 else "ip6tables"
        return f"{prog} -t {item.table} {item.chain} {shlex.join(item.spec)}"
    if isinstance(item, IpRule):
        return (
            f"ip -{item.family} rule fwmark {item.mark:#x} table {item.table} "
            f"priority {item.priority}"
        )
    if isinstance(item, BlockRoute):
        return (
            f"ip -{item.family} route unreachable default metric {KILL_SWITCH_METRIC} "
            f"table {item.table}"
        )
    via = f" via {item.gateway}" if item.gateway else ""
    return f"ip -{item.family} route default{via} dev {item.interface} table {item.table}"
