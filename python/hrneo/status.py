"""What ``hrneo status`` reports: the typed shape of the daemon's counters, and
the human table of them."""

from __future__ import annotations

import math
import time
from typing import Any, TypedDict


class CaptureStats(TypedDict):
    """The capture socket's counters."""

    packets: int  # packet messages read
    dropped: int  # handed over by the rule but never read (socket full; hold mode: fail-open)
    enobufs: int
    datagrams: int
    malformed: int  # datagrams or messages cut short (their packets are in dropped)


class PacketStats(TypedDict):
    """Every packet the capture rule handed to the daemon, counted once:
    captured = read + dropped; read = udp_dns + tcp_segments + untrusted +
    malformed + incomplete + non_dns (see ACCOUNTING)."""

    captured: int
    dropped: int
    read: int
    udp_dns: int  # UDP packets with a DNS message (each message then in events)
    tcp_segments: int  # TCP segments with payload (their messages in events as they complete)
    untrusted: int
    malformed: int
    incomplete: int
    non_dns: int


# The packet buckets of PacketStats whose sum is `read`, in the order shown.
READ_BUCKETS = ("udp_dns", "tcp_segments", "untrusted", "malformed", "incomplete", "non_dns")

# `hrneo status --help` (and the README): what the packet counters add up to.
ACCOUNTING = """\
Every packet the capture rule (NFLOG, or NFQUEUE in hold mode) hands to the
daemon is counted once, in `packets`:

  captured = read + dropped
  read     = udp_dns + tcp_segments + untrusted + malformed + incomplete + non_dns

dropped: the kernel could not queue it on the daemon's socket (full); in hold
mode it passed unread (fail-open). It is the kernel's own count, right at once.
Each DNS message (one per UDP packet, any number per TCP segment) is then one
of events = answers + queries_ignored. While the daemon is bound, the capture
rule's own counter (iptables -v -x -L, nft's `counter`) equals `captured`.
Packets the kernel drops before the rule (the network card's ring, the backlog
of net.core.netdev_max_backlog) never reach it: they show in
/proc/net/softnet_stat and `ip -s link`, not here."""


class TcpStats(TypedDict):
    """DNS over TCP put back together from its segments."""

    reassembled: int  # messages that spanned more than one segment
    flows: int  # connections followed now
    gaps: int  # segments that never arrived: the rest of that connection is not read
    unfinished: int  # messages never completed (connection closed, idle, or over a cap)
    dropped_bytes: int


class HoldStats(TypedDict):
    """Hold mode (capture: nfqueue): the answers held until their addresses were in."""

    held: int  # packets read, each held until a verdict
    released: int  # by a verdict of ours
    outstanding: int
    timeouts: int  # released by the hold_max_ms deadline instead
    fail_opens: int  # passed by the kernel unread (socket full)
    verdict_errors: int
    p50_us: int  # hold time (read to verdict) of the last 4096 packets
    p99_us: int
    max_us: int


class BlindClient(TypedDict):
    """One LAN client's new connections, and those to addresses no answer contained."""

    client: str
    connections: int
    blind: int
    last_blind: str | None


class BlindReport(TypedDict):
    """DNS-blind counting (`Pipeline.blind_clients`)."""

    clients: list[BlindClient]  # most blind first
    uncounted: int  # connections of clients past the cap


class BlindClientStatus(BlindClient):
    """A client in `status`: its share of blind connections, and whether it is
    likely resolving some other way (DNS over HTTPS/TLS, hard-coded addresses)."""

    share: float
    likely: bool


class BlindStatus(TypedDict):
    """DNS-blind counting in `status` (None there: off, or no conntrack events)."""

    clients: list[BlindClientStatus]
    uncounted: int


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
    protected: int  # addresses left out: the router needs them, or they route nowhere
    set_full: int  # commits that found the set full
    not_added: int  # addresses a failed commit did not put in


class FlusherStats(TypedDict):
    """``ConntrackFlusher.stats()``, and the conntrack thread's flusher in status."""

    calls: int
    dumped: int  # entries read from dumps
    matched: int
    deleted: int
    already_gone: int  # deletes answered ENOENT: the entry went after the dump
    errors: int
    unparsed: int
    tracking: int  # 1 while the event socket is subscribed
    index_entries: int
    events: int
    resyncs: int  # dumps that (re)built the index, the initial one included
    lost: int  # ENOBUFS on the event socket: the index was invalidated
    index_lookups: int  # flushes answered from the index (no dump)
    index_full: int
    dns_filtered: int  # 1 while the events of DNS flows are dropped in the kernel


class ConntrackStats(TypedDict):
    """The conntrack thread's counters."""

    calls: int
    flushed: int
    errors: int
    race_misses: int  # new addresses that already had connections to flush
    pending: int
    tracking: bool
    flusher: FlusherStats


class PipelineStats(TypedDict):
    """What the core's ``Pipeline.stats()`` returns."""

    events: int
    answers: int
    queries_ignored: int
    rcode_skipped: int
    unwatched: int
    untrusted: int  # answers from a source that is not a trusted resolver
    malformed: int  # packets (UDP DNS that does not decode, broken headers)
    incomplete: int
    non_dns: int
    udp_dns: int
    tcp_segments: int
    tcp_malformed: int  # DNS messages put together from TCP that do not decode
    commit_errors: int
    sets_recreated: int
    read_errors: int
    wakeups: int
    capture: CaptureStats
    tcp: TcpStats
    hold: HoldStats | None
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
    verify_answers: bool  # the config's firewall.verify_answers
    unverified: list[int]  # IP versions whose iptables lacks the conntrack match


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
    capture_mode: str  # "nflog" (copies) or "nfqueue" (hold mode)
    nfqueue_num: int
    backend: str  # "ipset" or "nftables"
    uptime: float
    events_per_s: float
    events: int
    answers: int
    queries_ignored: int
    rcode_skipped: int
    unwatched: int
    untrusted: int
    malformed: int
    dropped: int
    packets: PacketStats
    commit_errors: int
    flush_errors: int
    flushed: int
    race_misses: int
    read_errors: int
    reconciled: int
    flush_pending: int
    capture: CaptureStats
    tcp: TcpStats
    hold: HoldStats | None  # hold mode's counters, None with nflog
    conntrack: ConntrackStats | None
    last_reload: ReloadInfo | None
    firewall: FirewallStatus
    policies: list[PolicyStatus]
    dns_blind: BlindStatus | None


def _ago(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _packets_line(st: dict[str, Any]) -> list[str]:
    """`captured = buckets + dropped` in words (none from a daemon without it)."""
    pk = st.get("packets")
    if not isinstance(pk, dict):
        return []
    names = {"udp_dns": "dns", "tcp_segments": "tcp", "non_dns": "not dns"}
    parts = " + ".join(f"{names.get(k, k)} {pk.get(k, 0)}" for k in READ_BUCKETS)
    captured, dropped = pk.get("captured", 0), pk.get("dropped", 0)
    return [f"packets captured {captured} = {parts} + dropped by the kernel {dropped}"]


def format_status(st: dict[str, Any]) -> str:
    """The human table of `hrneo status` (tolerant of missing keys: older daemons)."""
    if st.get("capture_mode") == "nfqueue":
        capture = f"nfqueue {st.get('nfqueue_num')} (hold)"
    else:
        capture = f"nflog group {st.get('nflog_group')}"
    lines = [
        (
            f"hrneo pid {st.get('pid')}  up {_ago(float(st.get('uptime', 0)))}  "
            f"config {st.get('config')}  {capture}  sets {st.get('backend', 'ipset')}"
        ),
        (
            f"events {st.get('events', 0)}  ({st.get('events_per_s', 0)}/s)  answers "
            f"{st.get('answers', 0)}  queries ignored {st.get('queries_ignored', 0)}  "
            f"dropped {st.get('dropped', 0)}  malformed {st.get('malformed', 0)}"
        ),
        *_packets_line(st),
        (
            f"conntrack flushed {st.get('flushed', 0)}  commit errors {st.get('commit_errors', 0)}"
            f"  flush errors {st.get('flush_errors', 0)}  race misses {st.get('race_misses', 0)}"
        ),
    ]
    tcp = st.get("tcp") or {}
    if tcp.get("reassembled") or tcp.get("gaps") or tcp.get("dropped_bytes"):
        lines.append(
            f"dns over tcp: {tcp.get('reassembled', 0)} reassembled  {tcp.get('gaps', 0)} gaps"
            f"  {tcp.get('dropped_bytes', 0)} bytes dropped  {tcp.get('flows', 0)} connections"
        )
    hold = st.get("hold")
    if isinstance(hold, dict):
        lines.append(
            f"held {hold.get('held', 0)}  hold p50 {hold.get('p50_us', 0)} us  p99 "
            f"{hold.get('p99_us', 0)} us  max {hold.get('max_us', 0)} us  deadline releases "
            f"{hold.get('timeouts', 0)}  fail-opens {hold.get('fail_opens', 0)}"
        )
    blind = st.get("dns_blind")
    if isinstance(blind, dict):
        flagged = [c for c in blind.get("clients") or [] if isinstance(c, dict) and c.get("likely")]
        lines.extend(
            f"DNS-blind client {c.get('client')}: {c.get('blind')} of {c.get('connections')} "
            f"new connections to addresses no DNS answer contained (last "
            f"{c.get('last_blind')}): likely DNS over HTTPS/TLS or hard-coded addresses"
            for c in flagged
        )
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
    if fw.get("unverified"):
        versions = ", ".join(f"IPv{v}" for v in fw["unverified"])
        lines.append(f"answers NOT verified ({versions}: iptables has no conntrack match)")
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
    lines.extend(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    )
    return "\n".join(lines)


# -- Prometheus text exposition (format 0.0.4) ----------------------------------

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (status key, metric name, type, help): the daemon-wide numbers.
_GLOBAL_METRICS = (
    ("events", "hrneo_dns_messages_total", "counter",
     "DNS messages decoded (answers and queries)."),
    ("answers", "hrneo_answers_total", "counter", "DNS answers seen."),
    ("queries_ignored", "hrneo_queries_ignored_total", "counter", "DNS queries ignored."),
    ("rcode_skipped", "hrneo_rcode_skipped_total", "counter", "Answers skipped: rcode not 0."),
    ("unwatched", "hrneo_unwatched_total", "counter", "Answers matching no policy."),
    ("untrusted", "hrneo_untrusted_total", "counter",
     "Answers not read: their source is not a trusted resolver."),
    ("malformed", "hrneo_malformed_total", "counter", "Packets that were not valid DNS."),
    ("dropped", "hrneo_capture_dropped_total", "counter",
     "Packets the kernel logged but could not deliver (socket buffer full)."),
    ("commit_errors", "hrneo_commit_errors_total", "counter", "Set updates that failed."),
    ("flushed", "hrneo_conntrack_flushed_total", "counter", "Conntrack entries deleted."),
    ("flush_errors", "hrneo_conntrack_flush_errors_total", "counter",
     "Conntrack flushes that failed."),
    ("race_misses", "hrneo_race_misses_total", "counter",
     "New addresses that already had connections to flush."),
    ("read_errors", "hrneo_read_errors_total", "counter", "Errors reading the capture socket."),
    ("hold.held", "hrneo_hold_packets_total", "counter",
     "Hold mode: answers held until their addresses were in the sets."),
    ("hold.timeouts", "hrneo_hold_timeouts_total", "counter",
     "Hold mode: answers let through by the hold_max_ms deadline."),
    ("hold.fail_opens", "hrneo_hold_fail_opens_total", "counter",
     "Hold mode: answers the kernel passed unread (queue socket full)."),
    ("hold.p50_us", "hrneo_hold_p50_microseconds", "gauge",
     "Hold mode: median hold time of the last 4096 answers."),
    ("hold.p99_us", "hrneo_hold_p99_microseconds", "gauge",
     "Hold mode: 99th percentile hold time of the last 4096 answers."),
    ("tcp.reassembled", "hrneo_tcp_reassembled_total", "counter",
     "DNS-over-TCP messages put back together from several segments."),
    ("tcp.gaps", "hrneo_tcp_gaps_total", "counter",
     "DNS-over-TCP segments never seen: the rest of that connection was not read."),
    ("tcp.dropped_bytes", "hrneo_tcp_dropped_bytes_total", "counter",
     "DNS-over-TCP bytes not read (after a gap, or over the memory caps)."),
    ("reconciled", "hrneo_reinstalled_total", "counter",
     "Rules and routes put back after they vanished."),
    ("uptime", "hrneo_uptime_seconds", "gauge", "Seconds since the daemon started."),
    ("events_per_s", "hrneo_dns_messages_per_second", "gauge",
     "DNS messages per second over the last few seconds."),
    ("flush_pending", "hrneo_conntrack_flush_pending", "gauge",
     "Conntrack flushes handed to the core's thread and not done yet."),
)  # fmt: skip

# (policy key, metric suffix, help): one series per policy, label `policy`.
_POLICY_METRICS = (
    ("matched", "answers_matched_total", "Answers that matched the policy."),
    ("added", "addresses_added_total", "Addresses written to the policy's sets."),
    ("new", "addresses_new_total", "Addresses that were new to the policy's sets."),
    ("refreshed", "addresses_refreshed_total", "Addresses already in the set (timeout renewed)."),
    ("flushed", "conntrack_flushed_total", "Conntrack entries deleted for the policy."),
    ("errors", "errors_total", "Set updates of the policy that failed."),
    ("v6_dropped", "ipv6_dropped_total", "IPv6 addresses dropped: the policy has no ipset6."),
    ("hint_addresses", "hint_addresses_total", "Addresses taken from SVCB/HTTPS hints."),
)


def _escape_label(value: object) -> str:
    # The exposition format's three escapes; anything else goes through as UTF-8.
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "NaN"
    return repr(f) if math.isfinite(f) else "NaN"


def _lookup(st: dict[str, Any], key: str) -> object:
    """`st[key]`, following dots into nested dicts; 0 when absent (older daemons)."""
    value: object = st
    for part in key.split("."):
        value = value.get(part, 0) if isinstance(value, dict) else 0
    return value


def format_prometheus(st: dict[str, Any]) -> str:
    """`st` (a status reply) as Prometheus text exposition, one family per metric
    with its HELP and TYPE lines; per-policy series carry `policy` and `ipset` labels."""
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")

    for key, name, kind, text in _GLOBAL_METRICS:
        family(name, kind, text)
        out.append(f"{name} {_number(_lookup(st, key))}")
    family(
        "hrneo_packets_total", "counter",
        "Packets the capture rule handed to the daemon, each counted once by what became of "
        "it; the sum over `outcome` is what the rule matched while the daemon was bound.",
    )  # fmt: skip
    packets = st.get("packets")
    pk: dict[str, Any] = packets if isinstance(packets, dict) else {}
    out.extend(
        f'hrneo_packets_total{{outcome="{key}"}} {_number(pk.get(key, 0))}'
        for key in (*READ_BUCKETS, "dropped")
    )
    family("hrneo_info", "gauge", "The running daemon: 1, with its pid and config in labels.")
    out.append(
        f'hrneo_info{{pid="{_escape_label(st.get("pid", ""))}",'
        f'config="{_escape_label(st.get("config", ""))}"}} 1'
    )
    rl = st.get("last_reload")
    family("hrneo_last_reload_success", "gauge", "1 if the last reload was applied, 0 if refused.")
    out.append(f"hrneo_last_reload_success {_number(bool(rl.get('ok'))) if rl else 'NaN'}")
    fw = st.get("firewall") or {}
    family("hrneo_firewall_missing", "gauge", "Rules and routes found missing (being retried).")
    out.append(f"hrneo_firewall_missing {len(fw.get('missing') or [])}")
    policies = [p for p in st.get("policies") or [] if isinstance(p, dict)]
    family("hrneo_policy_domains", "gauge", "Domains on the policy's watchlist.")
    out.extend(
        f"hrneo_policy_domains{{{_policy_labels(p)}}} {_number(p.get('domains', 0))}"
        for p in policies
    )
    for key, suffix, text in _POLICY_METRICS:
        family(f"hrneo_policy_{suffix}", "counter", text)
        out.extend(
            f"hrneo_policy_{suffix}{{{_policy_labels(p)}}} {_number(p.get(key, 0))}"
            for p in policies
        )
    return "\n".join(out) + "\n"


def _policy_labels(p: dict[str, Any]) -> str:
    return (
        f'policy="{_escape_label(p.get("name", ""))}",ipset="{_escape_label(p.get("ipset", ""))}"'
    )
