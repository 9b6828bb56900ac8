"""``hrneo replay FILE``: which addresses a capture's DNS answers would put into
which set, with no kernel and no root.

Every DNS message of the capture goes through the same decisions as the
daemon's pipeline: queries are ignored (a spoofed query may carry answer
records), answers with an rcode other than 0 are skipped, the question name
and every CNAME and SVCB/HTTPS target are matched together against the
config's watchlist (the most specific domain wins), and each A/AAAA address
(and HTTPS hint) goes to the policy's set of its family; an IPv6 address of a
policy without ``ipset6`` is dropped and counted.

One difference: a TCP segment carrying several DNS messages counts its first
message only (``parse_packet`` returns one), where the daemon reads them all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from hrneo import _core
from hrneo.config import Config, Policy
from hrneo.pcapfile import LINKTYPE_NAMES, PcapError, ip_packet, read_frames

MAX_NAMES = 5  # question names kept per address, for the report

COUNTER_KEYS = (
    "frames",
    "not_ip",
    "not_dns",
    "queries_ignored",
    "answers",
    "rcode_skipped",
    "unwatched",
    "matched",
    "v6_dropped",
)


@dataclass
class Learned:
    """One address as a set would hold it after the replay."""

    policy: str
    names: list[str]  # question names of the answers that carried it (first MAX_NAMES)
    domain: str  # the watched domain of the first match
    rule: str  # `file:line` where that domain is written
    first_seen: float
    last_seen: float
    answers: int = 0


@dataclass
class ReplayResult:
    """What a replay found: set -> address -> :class:`Learned`, and counters."""

    sets: dict[str, dict[str, Learned]] = field(default_factory=dict)
    set_policy: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_KEYS, 0))
    linktypes: set[int] = field(default_factory=set)
    damage: str | None = None  # where a damaged file stopped making sense

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-able built-in types."""
        return {
            "counters": dict(self.counters),
            "linktypes": sorted(LINKTYPE_NAMES.get(t, f"linktype {t}") for t in self.linktypes),
            "damage": self.damage,
            "sets": {
                name: {
                    "policy": self.set_policy[name],
                    "addresses": {
                        addr: {
                            "names": info.names,
                            "domain": info.domain,
                            "rule": info.rule,
                            "first_seen": info.first_seen,
                            "last_seen": info.last_seen,
                            "answers": info.answers,
                        }
                        for addr, info in sorted(members.items(), key=_addr_key)
                    },
                }
                for name, members in sorted(self.sets.items())
            },
        }


def _addr_key(item: tuple[str, Learned]) -> tuple[int, int]:
    a = ipaddress.ip_address(item[0])
    return a.version, int(a)


def replay(cfg: Config, f: BinaryIO) -> ReplayResult:
    """Replay the capture stream `f` against `cfg`.

    Raises :class:`~hrneo.pcapfile.PcapError` when `f` is not a capture at all;
    damage later in the file ends the replay and is noted in ``damage``.
    """
    res = ReplayResult()
    by_index: dict[int, Policy] = {p.index: p for p in cfg.policies}
    c = res.counters
    frames = read_frames(f)
    try:
        for frame in frames:
            c["frames"] += 1
            res.linktypes.add(frame.linktype)
            packet = ip_packet(frame.linktype, frame.data)
            if packet is None:
                c["not_ip"] += 1
                continue
            event = _core.parse_packet(packet)
            if event is None:
                c["not_dns"] += 1
            else:
                _event(res, cfg, by_index, event, frame.time)
    except PcapError as e:
        if c["frames"] == 0:
            raise
        res.damage = str(e)
    return res


def _event(
    res: ReplayResult, cfg: Config, by_index: dict[int, Policy], event: _core.DnsEvent, t: float
) -> None:
    c = res.counters
    if not event.is_response:
        c["queries_ignored"] += 1
        return
    c["answers"] += 1
    if event.rcode != 0:
        c["rcode_skipped"] += 1
        return
    hit = cfg.watchlist.match_chain(event.chain)
    policy = None if hit is None else by_index.get(hit.policy)
    if hit is None or policy is None:
        c["unwatched"] += 1
        return
    c["matched"] += 1
    for addr in event.addresses:
        set_name = policy.ipset6 if ":" in addr else policy.ipset
        if set_name is None:
            c["v6_dropped"] += 1
            continue
        res.set_policy[set_name] = policy.name
        members = res.sets.setdefault(set_name, {})
        info = members.get(addr)
        if info is None:
            info = members[addr] = Learned(
                policy=policy.name, names=[], domain=hit.domain,
                rule=f"{hit.source}:{hit.line}", first_seen=t, last_seen=t,
            )  # fmt: skip
        info.answers += 1
        info.last_seen = max(info.last_seen, t)
        if event.qname not in info.names and len(info.names) < MAX_NAMES:
            info.names.append(event.qname)


def format_replay(res: ReplayResult, source: str) -> str:
    """The human report of a replay."""
    c = res.counters
    kinds = ", ".join(sorted(LINKTYPE_NAMES.get(t, f"linktype {t}") for t in res.linktypes))
    head = (
        f"{source}: {c['frames']} frames ({kinds or 'none'}); DNS answers: {c['answers']} "
        f"(matched {c['matched']}, unwatched {c['unwatched']}, rcode not 0 "
        f"{c['rcode_skipped']}); queries ignored {c['queries_ignored']}; "
        f"not IP {c['not_ip']}, not DNS {c['not_dns']}"
    )
    lines = [head]
    if not res.sets:
        lines.append("no address would go to any set")
    for name, members in sorted(res.sets.items()):
        n = len(members)
        lines.append(
            f"set {name} (policy {res.set_policy[name]}): {n} address{'es' if n != 1 else ''}"
        )
        rows = [
            (addr, ",".join(info.names), f"{info.domain} ({info.rule})")
            for addr, info in sorted(members.items(), key=_addr_key)
        ]
        wa = max(len(r[0]) for r in rows)
        wn = max(len(r[1]) for r in rows)
        lines.extend(f"  {a.ljust(wa)}  {nm.ljust(wn)}  via {rule}" for a, nm, rule in rows)
    if c["v6_dropped"]:
        lines.append(
            f"{c['v6_dropped']} IPv6 addresses of policies without ipset6 dropped "
            "(as the daemon does)"
        )
    return "\n".join(lines)
