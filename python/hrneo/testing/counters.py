"""Counters the kernel keeps, to hold the daemon's `packets` against: what
hrneo's capture rules matched (iptables' rule counters, nft's `counter`), and
the host's backlog drops (/proc/net/softnet_stat), which happen before any
rule. Used by the end-to-end loss test and the daemon benchmark."""

from __future__ import annotations

import re
from pathlib import Path

from hrneo.testing.netns import Netns

# `[packets:bytes] -A CHAIN ... --comment "hrneo:dns" ...` in iptables-save -c.
_IPT_RULE = re.compile(r"^\[(\d+):\d+\] -A \S+ .*--comment \"?hrneo:dns\"? ")
# `... counter packets N bytes M ... comment "hrneo:dns-udp"` in nft list.
_NFT_RULE = re.compile(r"counter packets (\d+) bytes \d+ .*comment \"hrneo:dns-(?:udp|tcp)\"")


def iptables_capture_packets(saved: str) -> int:
    """Packets hrneo's capture rules matched, from `iptables-save -c` text."""
    return sum(int(m.group(1)) for m in map(_IPT_RULE.match, saved.splitlines()) if m)


def nft_capture_packets(listing: str) -> int:
    """Packets hrneo's capture rules matched, from `nft list table inet hrneo` text."""
    return sum(int(m.group(1)) for m in map(_NFT_RULE.search, listing.splitlines()) if m)


def capture_rule_packets(ns: Netns, backend: str) -> int:
    """Packets hrneo's capture rules in `ns` matched so far, both families."""
    if backend == "nftables":
        return nft_capture_packets(ns.sh("nft list table inet hrneo", check=False).stdout)
    return sum(
        iptables_capture_packets(ns.sh([prog, "-c", "-t", "filter"], check=False).stdout)
        for prog in ("iptables-save", "ip6tables-save")
    )


def softnet_dropped(text: str) -> int:
    """Packets the host dropped because a CPU's input backlog was full
    (net.core.netdev_max_backlog): the 2nd column of /proc/net/softnet_stat
    (hexadecimal, one row per CPU), summed. Host-wide: every namespace sees
    the same rows, so it is no one daemon's count."""
    return sum(int(row.split()[1], 16) for row in text.splitlines() if len(row.split()) > 1)


def host_backlog_drops() -> int:
    """softnet_dropped() of this host now."""
    return softnet_dropped(Path("/proc/net/softnet_stat").read_text())
