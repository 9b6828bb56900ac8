"""What ``hrneo status`` reports: the typed shape of the daemon's counters, and
the human table of them."""

from __future__ import annotations

import time
from typing import Any, TypedDict


class CaptureStats(TypedDict):
    """The capture socket's counters."""

    packets: int
    dropped: int  # logged by the kernel but never delivered (socket buffer full)
    enobufs: int
    datagrams: int
    malformed: int


class PolicyCounters(TypedDict):
    """One policy's counters (kept by name across reloads)."""

    matched: int
    added: int
    new: int
    refreshed: int
    flushed: int
    errors: int
    v6_dropped: int
    hint_addresses: int


class ConntrackStats(TypedDict):
    """The conntrack thread's counters."""

    calls: int
    flushed: int
    errors: int
    race_misses: int  # new addresses that already had connections to flush
    pending: int
    tracking: bool
    flusher: dict[str, int]


class PipelineStats(TypedDict):
    """What the core's ``Pipeline.stats()`` returns."""

    events: int
    answers: int
    queries_ignored: int
    rcode_skipped: int
    unwatched: int
    malformed: int
    incomplete: int
    non_dns: int
    commit_errors: int
    sets_recreated: int
    read_errors: int
    wakeups: int
    capture: CaptureStats
    policies: dict[str, PolicyCounters]
    conntrack: ConntrackStats | None


class ReloadInfo(TypedDict):
    """The outcome of the last reload."""

    time: float
    ok: bool
    message: str


class FirewallStatus(TypedDict):
    """Rules and routes the daemon owns."""

    managed: bool
    items: int
    missing: list[str]


class PolicyStatus(PolicyCounters):
    """One policy in ``status``."""

    name: str
    ipset: str
    ipset6: str | None
    domains: int


class DaemonStatus(TypedDict):
    """The reply of the control socket's ``status`` command."""

    pid: int
    config: str
    nflog_group: int
    backend: str  # "ipset" or "nftables"
    uptime: float
    events_per_s: float
    events: int
    answers: int
    queries_ignored: int
    rcode_skipped: int
    unwatched: int
    malformed: int
    dropped: int
    commit_errors: int
    flush_errors: int
    flushed: int
    race_misses: int
    read_errors: int
    reconciled: int
    flush_pending: int
    capture: CaptureStats
    conntrack: ConntrackStats | None
    last_reload: ReloadInfo | None
    firewall: FirewallStatus
    policies: list[PolicyStatus]


def _ago(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def format_status(st: dict[str, Any]) -> str:
    """The human table of `hrneo status` (tolerant of missing keys: older daemons)."""
    lines = [
        (
            f"hrneo pid {st.get('pid')}  up {_ago(float(st.get('uptime', 0)))}  "
            f"config {st.get('config')}  nflog group {st.get('nflog_group')}  "
            f"sets {st.get('backend', 'ipset')}"
        ),
        (
            f"events {st.get('events', 0)}  ({st.get('events_per_s', 0)}/s)  answers "
            f"{st.get('answers', 0)}  queries ignored {st.get('queries_ignored', 0)}  "
            f"dropped {st.get('dropped', 0)}  malformed {st.get('malformed', 0)}"
        ),
        (
            f"conntrack flushed {st.get('flushed', 0)}  commit errors {st.get('commit_errors', 0)}"
            f"  flush errors {st.get('flush_errors', 0)}  race misses {st.get('race_misses', 0)}"
        ),
    ]
    rl = st.get("last_reload")
    if rl:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(rl.get("time", 0))))
        lines.append(
            f"last reload {when}: {'ok' if rl.get('ok') else 'FAILED'}: {rl.get('message', '')}"
        )
    else:
        lines.append("last reload: never")
    fw = st.get("firewall") or {}
    if fw.get("missing"):
        lines.append("missing rules/routes (retried): " + "; ".join(fw["missing"]))
    head = ("policy", "sets", "domains", "matched", "added", "new", "flushed", "errors")
    rows = [head]
    for p in st.get("policies", []):
        sets = p.get("ipset", "") + (f",{p['ipset6']}" if p.get("ipset6") else "")
        rows.append((
            str(p.get("name")), sets, str(p.get("domains", 0)), str(p.get("matched", 0)),
            str(p.get("added", 0)), str(p.get("new", 0)), str(p.get("flushed", 0)),
            str(p.get("errors", 0)),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines.append("")
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )
    return "\n".join(lines)
