"""Where the answers of a throughput round went: sent, dropped by the host
before any rule (its input backlog, host-wide), matched by hrneo's capture
rule, and the daemon's `packets`: read (by bucket) or dropped at its socket.

    unexplained = sent - backlog drops - read - dropped          (should be 0)

The backlog figure is the whole host's (/proc/net/softnet_stat): other
traffic on the machine can raise it, never lower it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from hrneo.status import READ_BUCKETS
from hrneo.testing.counters import capture_rule_packets, host_backlog_drops
from hrneo.testing.netns import Netns


@dataclass(frozen=True)
class Snapshot:
    """The counters at one moment."""

    rule: int  # packets hrneo's capture rules matched
    backlog: int  # the host's backlog drops
    answers: int
    packets: dict[str, int]  # the daemon's `packets` ({} from a daemon without it)


def snapshot(router: Netns, status: Callable[[], dict[str, Any]], backend: str) -> Snapshot:
    """The counters now: the rule's first, so what the daemon reads after it only adds."""
    rule = capture_rule_packets(router, backend)
    backlog = host_backlog_drops()
    st = status()
    packets = st.get("packets")
    pk = {k: int(v) for k, v in packets.items()} if isinstance(packets, dict) else {}
    answers = st.get("answers", 0)
    return Snapshot(rule, backlog, answers if isinstance(answers, int) else 0, pk)


def figures(sent: int, before: Snapshot, after: Snapshot) -> dict[str, int]:
    """One round's figures: each counter's change, and what none of them explains."""

    def moved(key: str) -> int:
        return after.packets.get(key, 0) - before.packets.get(key, 0)

    f = {
        "sent": sent,
        "backlog_drops": after.backlog - before.backlog,
        "matched_by_rule": after.rule - before.rule,
        "answers": after.answers - before.answers,
        "read": moved("read"),
        "dropped": moved("dropped"),
        **{k: moved(k) for k in READ_BUCKETS if k != "udp_dns"},
    }
    f["unexplained"] = sent - f["backlog_drops"] - f["read"] - f["dropped"]
    f["rule_minus_counted"] = f["matched_by_rule"] - f["read"] - f["dropped"]
    return f


def describe(f: dict[str, int]) -> str:
    """The figures of a round as one line."""
    others = ", ".join(f"{k} {f[k]}" for k in READ_BUCKETS if f.get(k))
    return (
        f"sent {f['sent']}, backlog drops (host) {f['backlog_drops']}, matched by the rule "
        f"{f['matched_by_rule']}, read {f['read']} (answers {f['answers']}"
        f"{', ' + others if others else ''}), dropped {f['dropped']}, "
        f"unexplained {f['unexplained']}"
    )
