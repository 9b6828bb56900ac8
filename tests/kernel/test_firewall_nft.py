"""The nftables rules, ip rules and routes on a real kernel, entirely inside a namespace.

NftFirewall runs `nft` and `ip` with the prefix `ip netns exec NS`; the sets come
from the core's Plan with backend nftables, as in the daemon.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require, require_kernel_tools
from hrneo import Plan
from hrneo.config import Config, load_config
from hrneo.errors import FirewallError
from hrneo.firewall import TableRoute
from hrneo.firewall_nft import NftFirewall
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

CONFIG = """\
backend: nftables
nflog_group: 77
firewall:
  dns_chains: [OUTPUT, FORWARD]
  ipv6: true
policies:
  - name: vpn1
    ipset: hrt_vpn1
    ipset6: hrt_vpn1_v6
    domains: [example.org]
    static: [203.0.113.0/24]
    route:
      interface: dum0
      gateway: 192.0.2.1
      gateway6: 2001:db8::1
      table: 1001
      mark: 0x1001
  - name: late
    ipset: hrt_late
    domains: [example.net]
    route:
      interface: late0
      table: 1002
      mark: 0x1200
      mask: 0xff00
"""


OWN = ["g77_dns_forward", "g77_dns_output", "g77_mark_output", "g77_mark_prerouting"]


def table(ns: Netns) -> str:
    """`nft -t list table inet hrneo` ('' when there is no such table)."""
    return ns.sh("nft -t list table inet hrneo", check=False).stdout


def chains(ns: Netns) -> list[str]:
    return re.findall(r"^\s*chain (\S+) \{", table(ns), re.MULTILINE)


def hrneo_rules(ns: Netns) -> list[str]:
    return [line.strip() for line in table(ns).splitlines() if 'comment "hrneo:' in line]


def fwmark_rules(ns: Netns, family: int) -> list[str]:
    out = ns.sh(["ip", f"-{family}", "rule", "show"]).stdout
    return [line for line in out.splitlines() if "fwmark" in line]


def table_routes(ns: Netns, family: int, number: int) -> list[str]:
    return ns.sh(["ip", f"-{family}", "route", "show", "table", str(number)]).stdout.splitlines()


@pytest.fixture
def setup(netns: Netns, tmp_path: Path) -> tuple[Netns, Config, Callable[[], NftFirewall]]:
    require_kernel_tools()
    require(shutil.which("nft") is not None, "needs the `nft` program")
    ns = netns
    for cmd in (
        "ip link add dum0 type veth peer name dum0p",
        "ip link set dum0p up",
        "ip addr add 192.0.2.2/24 dev dum0",
        "ip addr add 2001:db8::2/64 dev dum0 nodad",
        "ip link set dum0 up",
    ):
        ns.sh(cmd)
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    cfg, _ = load_config(str(path))
    with ns.enter():
        plan = Plan(cfg.watchlist, cfg.policies, backend="nftables")
        notes = plan.prepare()
    assert any("created set inet hrneo hrt_vpn1 " in n for n in notes), notes

    def make() -> NftFirewall:
        return NftFirewall(cfg.firewall, prefix=["ip", "netns", "exec", ns.name])

    return ns, cfg, make


def test_install_idempotent_reconcile_crash_and_stop(
    setup: tuple[Netns, Config, Callable[[], NftFirewall]],
) -> None:
    ns, cfg, make = setup
    fw = make()
    fw.start(cfg)
    try:
        assert sorted(chains(ns)) == OWN
        rules = hrneo_rules(ns)
        capture = [r for r in rules if "log group 77" in r]
        assert len(capture) == 4  # udp + tcp in output and forward, both families
        assert all("ct state established ct direction reply" in r for r in capture)
        marks = [r for r in rules if "meta mark set" in r]
        assert len(marks) == 6  # (v4 + v6 of vpn1, v4 of late) x prerouting/output
        assert any("ip daddr @hrt_vpn1 meta mark set 0x00001001" in r for r in marks), marks
        assert any("ip6 daddr @hrt_vpn1_v6" in r for r in marks), marks
        # a mask leaves the other mark bits alone, in the rule and the ip rule
        # (nft prints `and 0xffff00ff or 0x1200` folded: the same bits)
        assert any("@hrt_late meta mark set meta mark & 0xffff12ff | 0x00001200" in r
                   for r in marks), marks  # fmt: skip
        assert any("fwmark 0x1200/0xff00 lookup 1002" in r for r in fwmark_rules(ns, 4))
        assert len(fwmark_rules(ns, 4)) == 2 and len(fwmark_rules(ns, 6)) == 1
        assert any(line.startswith("default via 192.0.2.1 dev dum0")
                   for line in table_routes(ns, 4, 1001))  # fmt: skip
        assert TableRoute(4, 1002, "late0", None) in fw.missing

        # installing again replaces, adds nothing
        fw.apply(cfg)
        assert sorted(hrneo_rules(ns)) == sorted(rules)

        # the VPN comes up late; a chain is deleted by hand: reconcile fixes both
        ns.sh("ip link add late0 type veth peer name late0p")
        ns.sh("ip link set late0p up")
        ns.sh("ip link set late0 up")
        ns.sh("nft flush chain inet hrneo g77_dns_output")
        ns.sh("nft delete chain inet hrneo g77_dns_output")
        assert len(hrneo_rules(ns)) == len(rules) - 2
        assert fw.reconcile() >= 3
        assert sorted(hrneo_rules(ns)) == sorted(rules)
        assert any(line.startswith("default dev late0") for line in table_routes(ns, 4, 1002))
        assert not fw.missing
    except BaseException:
        fw.stop()
        raise

    # crash: fw never stops; a new instance starts over the leftovers, and a
    # daemon of another group that finds them (alone) removes them
    fw2 = make()
    fw2.start(cfg)
    try:
        assert sorted(hrneo_rules(ns)) == sorted(rules)
        other = NftFirewall(cfg.firewall, prefix=["ip", "netns", "exec", ns.name])
        other.start(replace(cfg, nflog_group=78, policies=()), clean_stale=False)
        # (another daemon lives: its group's capture chains go beside ours)
        assert sorted(chains(ns)) == sorted([*OWN, "g78_dns_forward", "g78_dns_output"])
        other.stop()
        assert sorted(chains(ns)) == OWN
        assert len(fwmark_rules(ns, 4)) == 2 and len(fwmark_rules(ns, 6)) == 1
    finally:
        fw2.stop()

    assert chains(ns) == [] and hrneo_rules(ns) == []
    assert fwmark_rules(ns, 4) == [] and fwmark_rules(ns, 6) == []
    assert table_routes(ns, 4, 1001) == [] and table_routes(ns, 6, 1001) == []
    # the sets stay, with what they hold
    listing = ns.sh("nft list set inet hrneo hrt_vpn1").stdout
    assert "203.0.113.0/24" in listing


def test_the_whole_table_flushed_comes_back_after_the_sets(
    setup: tuple[Netns, Config, Callable[[], NftFirewall]],
) -> None:
    ns, cfg, make = setup
    fw = make()
    fw.start(cfg)
    try:
        ns.sh("nft delete table inet hrneo")  # as `nft flush ruleset` would
        # The rules name the sets: without them the transaction is refused (logged).
        assert fw.reconcile() == 0
        assert chains(ns) == []
        with ns.enter():
            Plan(cfg.watchlist, cfg.policies, backend="nftables").prepare()
        fw.reconcile()
        assert sorted(chains(ns)) == OWN
    finally:
        fw.stop()


def test_a_config_without_routes_has_capture_only_and_foreign_tables_are_untouched(
    setup: tuple[Netns, Config, Callable[[], NftFirewall]], tmp_path: Path
) -> None:
    ns, _cfg, make = setup
    ns.sh("nft add table inet fw4")
    ns.sh("nft add chain inet fw4 forward { type filter hook forward priority filter; }")
    path = tmp_path / "plain.yaml"
    path.write_text(
        "backend: nftables\nfirewall: {dns_chains: [FORWARD], ipv6: false}\n"
        "policies:\n  - {name: p, ipset: hrt_p, domains: [example.org]}\n"
    )
    cfg, _ = load_config(str(path))
    fw = make()
    fw.start(cfg)
    try:
        assert chains(ns) == ["g100_dns_forward"]  # the default nflog group
        assert all(r.startswith("meta nfproto ipv4 ") for r in hrneo_rules(ns))
    finally:
        fw.stop()
    assert "chain forward" in ns.sh("nft list table inet fw4").stdout


def test_a_refused_ruleset_is_a_firewall_error(
    setup: tuple[Netns, Config, Callable[[], NftFirewall]], tmp_path: Path
) -> None:
    ns, _cfg, make = setup
    path = tmp_path / "bad.yaml"
    # the set does not exist: nft refuses the rule that names it, and with it the rest
    path.write_text(
        "backend: nftables\npolicies:\n  - name: p\n    ipset: hrt_none\n"
        "    domains: [example.org]\n    route: {interface: dum0, table: 7, mark: 7}\n"
    )
    cfg, _ = load_config(str(path))
    fw = make()
    with pytest.raises(FirewallError, match="hrt_none"):
        fw.start(cfg)
    fw.stop()
    assert hrneo_rules(ns) == []
