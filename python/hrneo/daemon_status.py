"""The reply of the control socket's `status` command, from the daemon's state."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, cast

from hrneo.status import (
    READ_BUCKETS,
    BlindClientStatus,
    BlindReport,
    BlindStatus,
    DaemonStatus,
    PacketStats,
    PipelineStats,
    PolicyCounters,
    PolicyStatus,
    TcpStats,
)

if TYPE_CHECKING:
    from hrneo.daemon import Daemon


def daemon_status(d: Daemon, ps: PipelineStats | None) -> DaemonStatus:
    """Counters and state of `d`, with `ps` its pipeline's counters (None: not running)."""
    capture = ps["capture"] if ps else {"packets": 0, "dropped": 0, "enobufs": 0,
                                         "datagrams": 0, "malformed": 0}  # fmt: skip
    ct = ps["conntrack"] if ps else None
    tcp = ps["tcp"] if ps else cast(TcpStats, dict.fromkeys(TcpStats.__annotations__, 0))

    def count(key: str) -> int:
        return int(cast(dict[str, Any], ps).get(key, 0)) if ps else 0

    read = {k: count(k) for k in READ_BUCKETS}
    packets = cast(PacketStats, {
        "captured": capture["packets"] + capture["dropped"], "dropped": capture["dropped"],
        "read": capture["packets"], **read,
    })  # fmt: skip
    by_name = ps["policies"] if ps else {}
    policies: list[PolicyStatus] = []
    nft = d.backend is not None and d.backend.name == "nftables"
    for p in d.config.policies:
        c = by_name.get(p.name)
        zero = dict.fromkeys(PolicyCounters.__annotations__, 0)
        # The sets the addresses go to: with nftables, `family#table#set`.
        sets = (p.nft_set4, p.nft_set6) if nft else (p.ipset, p.ipset6)
        entry = {
            **zero, **(c or {}),
            "name": p.name, "ipset": sets[0], "ipset6": sets[1], "domains": p.domain_count,
        }  # fmt: skip
        policies.append(cast(PolicyStatus, entry))
    return {
        "pid": os.getpid(),
        "config": d.config.path,
        "nflog_group": d.config.nflog_group,
        "capture_mode": d.config.capture,
        "nfqueue_num": d.config.nfqueue_num,
        "backend": d.backend.name if d.backend else "ipset",
        "uptime": time.time() - d.started,
        "events_per_s": round(d.event_rate.rate, 1),
        "events": count("events"),
        "answers": count("answers"),
        "queries_ignored": count("queries_ignored"),
        "rcode_skipped": count("rcode_skipped"),
        "unwatched": count("unwatched"),
        "untrusted": count("untrusted"),
        "malformed": count("malformed") + count("tcp_malformed") + capture["malformed"],
        "dropped": capture["dropped"],
        "packets": packets,
        "commit_errors": count("commit_errors"),
        "flush_errors": ct["errors"] if ct else 0,
        "flushed": ct["flushed"] if ct else 0,
        "race_misses": ct["race_misses"] if ct else 0,
        "read_errors": count("read_errors"),
        "reconciled": d.counters["reconciled"],
        # 0 once every conntrack flush handed to the core's thread so far has run.
        "flush_pending": ct["pending"] if ct else 0,
        "capture": capture,
        "tcp": tcp,
        "hold": ps.get("hold") if ps else None,
        "conntrack": ct,
        "last_reload": d.last_reload,
        "firewall": {
            "managed": d._firewall_on,
            "items": len(d.firewall.items),
            "missing": sorted(d.firewall.describe(i) for i in d.firewall.missing),
            "verify_answers": d.config.firewall.verify_answers,
            "unverified": sorted(d.firewall.unverified),
        },
        "policies": policies,
        "dns_blind": blind_summary(d.pipeline.blind_clients() if d.pipeline else None),
    }


# A client is flagged once this many of its new connections were seen, and at
# least this share of them went to addresses no answer contained.
BLIND_MIN_CONNECTIONS = 20
BLIND_SHARE = 0.5
# Clients listed in a status reply at most (the core counts BLIND_CLIENTS).
BLIND_LISTED = 20


def blind_summary(report: BlindReport | None) -> BlindStatus | None:
    """The status's view of DNS-blind counting: the clients with the most blind
    connections, each flagged `likely` when its share is high."""
    if report is None:
        return None
    clients: list[BlindClientStatus] = []
    for c in report["clients"][:BLIND_LISTED]:
        share = c["blind"] / c["connections"] if c["connections"] else 0.0
        likely = c["connections"] >= BLIND_MIN_CONNECTIONS and share >= BLIND_SHARE
        clients.append({**c, "share": round(share, 3), "likely": likely})
    return {"clients": clients, "uncounted": report["uncounted"]}
