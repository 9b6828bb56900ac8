"""What the end-to-end tests do to the router behind hrneo's back (as firmware or
an administrator would), for either backend: ipset + iptables, or nftables."""

from __future__ import annotations

import re

from topology import Topology

CAPTURE_CHAIN = "g100_dns_forward"  # hrneo's FORWARD capture chain in inet hrneo (group 100)
COUNT_TABLE = "inet e2e_count"


def flush_set(t: Topology, name: str) -> None:
    """Empty one of hrneo's sets."""
    if t.backend == "nftables":
        t.router.sh(f"nft flush set inet hrneo {name}")
    else:
        t.router.sh(f"ipset flush {name}")


def delete_member(t: Topology, name: str, addr: str) -> None:
    """Take `addr` out of a set (no error if it is not there)."""
    if t.backend == "nftables":
        t.router.sh(f"nft delete element inet hrneo {name} {{ {addr} }}", check=False)
    else:
        t.router.sh(f"ipset -exist del {name} {addr}", check=False)


def wipe_marking_and_set(t: Topology, name: str) -> None:
    """As firmware does: the marking rules gone (chains rewritten), then the set."""
    if t.backend == "nftables":
        for chain in ("g100_mark_prerouting", "g100_mark_output"):
            t.router.sh(f"nft flush chain inet hrneo {chain}")
            t.router.sh(f"nft delete chain inet hrneo {chain}")
        t.router.sh(f"nft delete set inet hrneo {name}")
    else:
        t.router.sh("iptables -w -t mangle -F PREROUTING")
        t.router.sh("iptables -w -t mangle -F OUTPUT")
        t.router.sh(f"ipset destroy {name}")


def mark_rules(t: Topology, name: str) -> int:
    """How many of hrneo's marking rules match set `name`."""
    if t.backend == "nftables":
        out = t.router.sh("nft -t list table inet hrneo", check=False).stdout
        return len(re.findall(rf"daddr @{re.escape(name)} meta mark set", out))
    out = t.router.sh("iptables -w -t mangle -S").stdout
    return out.count(f"--match-set {name} dst")


def capture_rule(t: Topology, proto: str) -> str:
    """hrneo's FORWARD capture rule for `proto` ('' if missing): its iptables argv
    tail, or its nftables handle."""
    if t.backend == "nftables":
        out = t.router.sh(f"nft -a list chain inet hrneo {CAPTURE_CHAIN}", check=False).stdout
        for line in out.splitlines():
            m = re.search(rf'comment "hrneo:dns-{proto}" # handle (\d+)', line)
            if m:
                return m.group(1)
        return ""
    for line in t.router.sh("iptables -w -S FORWARD").stdout.splitlines():
        if "NFLOG" in line and f"-p {proto}" in line:
            return line.split(" ", 2)[2]
    return ""


def delete_capture_rule(t: Topology, proto: str) -> None:
    """Remove hrneo's FORWARD capture rule for `proto`."""
    rule = capture_rule(t, proto)
    if t.backend == "nftables":
        t.router.sh(f"nft delete rule inet hrneo {CAPTURE_CHAIN} handle {rule}")
    else:
        t.router.sh("iptables -w -D FORWARD " + rule)


def count_rule(t: Topology, family: int, iface: str, proto: str, dports: str, tag: str) -> None:
    """A rule that only counts packets in `iface` from port 53 to `dports` ("a:b"),
    before anything else of the router (raw PREROUTING, or nft priority raw)."""
    if t.backend == "nftables":
        lo, hi = dports.split(":")
        fam = "ipv4" if family == 4 else "ipv6"
        t.router.sh(["nft", "add", "table", *COUNT_TABLE.split()])
        t.router.sh(["nft", "add", "chain", *COUNT_TABLE.split(), "pre",
                     "{ type filter hook prerouting priority raw; policy accept; }"])  # fmt: skip
        t.router.sh(["nft", "add", "rule", *COUNT_TABLE.split(), "pre", "meta", "nfproto", fam,
                     "iifname", iface, proto, "sport", "53", proto, "dport", f"{lo}-{hi}",
                     "counter", "comment", f'"{tag}/{family}"'])  # fmt: skip
        return
    prog = "iptables" if family == 4 else "ip6tables"
    spec = f"-i {iface} -p {proto} --sport 53 --dport {dports} -m comment --comment {tag}"
    t.router.sh(f"{prog} -w -t raw -I PREROUTING {spec}")


def counted(t: Topology, family: int, tag: str) -> int:
    """Packets the count_rule rules tagged `tag` saw, for `family`."""
    if t.backend == "nftables":
        out = t.router.sh(["nft", "list", "chain", *COUNT_TABLE.split(), "pre"]).stdout
        return sum(
            int(m.group(1))
            for m in re.finditer(rf'counter packets (\d+) bytes \d+ comment "{tag}/{family}"', out)
        )
    prog = "iptables" if family == 4 else "ip6tables"
    out = t.router.sh(f"{prog} -w -t raw -nvxL PREROUTING").stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if tag in line)
