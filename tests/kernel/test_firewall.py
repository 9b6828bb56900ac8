"""Firewall rules, ip rules and routes on a real kernel, entirely inside a namespace.

The Firewall runs its programs with the prefix `ip netns exec NS`, so nothing
touches the host's own rules.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_kernel_tools
from hrneo.config import Config, load_config
from hrneo.firewall import Firewall, TableRoute
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

CONFIG = """\
nflog_group: 77
firewall:
  dns_chains: [OUTPUT, FORWARD]
  ipv6: true
policies:
  - name: vpn1
    ipset: hrt_vpn1
    ipset6: hrt_vpn1_v6
    domains: [example.org]
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


def hrneo_lines(ns: Netns, prog: str, table: str) -> list[str]:
    out = ns.sh([prog, "-w", "-t", table, "-S"]).stdout
    return [line for line in out.splitlines() if "hrneo:" in line]


def fwmark_rules(ns: Netns, family: int) -> list[str]:
    out = ns.sh(["ip", f"-{family}", "rule", "show"]).stdout
    return [line for line in out.splitlines() if "fwmark" in line]


def table_routes(ns: Netns, family: int, table: int) -> list[str]:
    return ns.sh(["ip", f"-{family}", "route", "show", "table", str(table)]).stdout.splitlines()


@pytest.fixture
def setup(netns: Netns, tmp_path: Path) -> tuple[Netns, Config, Callable[[], Firewall]]:
    require_kernel_tools("iptables", "ip6tables", "ipset")
    ns = netns
    for cmd in (
        "ipset create hrt_vpn1 hash:net timeout 60",
        "ipset create hrt_vpn1_v6 hash:net family inet6 timeout 60",
        "ipset create hrt_late hash:net",
        # veth pairs inside the namespace stand in for the uplink (no `dummy` module here)
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

    def make() -> Firewall:
        return Firewall(cfg.firewall, prefix=["ip", "netns", "exec", ns.name])

    return ns, cfg, make


def test_install_idempotent_reconcile_crash_and_stop(
    setup: tuple[Netns, Config, Callable[[], Firewall]],
) -> None:
    ns, cfg, make = setup
    fw = make()
    fw.start(cfg)
    try:
        v4 = hrneo_lines(ns, "iptables", "filter")
        assert len(v4) == 4  # udp + tcp in OUTPUT and FORWARD
        assert all("--nflog-group 77" in line for line in v4)
        assert len(hrneo_lines(ns, "ip6tables", "filter")) == 4
        mangle = hrneo_lines(ns, "iptables", "mangle")
        assert len(mangle) == 4  # 2 policies x PREROUTING/OUTPUT
        assert any("--match-set hrt_vpn1 dst" in line and "0x1001" in line for line in mangle)
        # a mask leaves the other mark bits alone, in the MARK rule and the ip rule
        assert any("--set-xmark 0x1200/0xff00" in line for line in mangle), mangle
        assert any("fwmark 0x1200/0xff00 lookup 1002" in r for r in fwmark_rules(ns, 4))
        mangle6 = hrneo_lines(ns, "ip6tables", "mangle")
        assert len(mangle6) == 2 and all("hrt_vpn1_v6" in line for line in mangle6)
        assert len(fwmark_rules(ns, 4)) == 2 and len(fwmark_rules(ns, 6)) == 1
        assert any(line.startswith("default via 192.0.2.1 dev dum0")
                   for line in table_routes(ns, 4, 1001))  # fmt: skip
        assert any(line.startswith("default via 2001:db8::1 dev dum0")
                   for line in table_routes(ns, 6, 1001))  # fmt: skip
        # late0 does not exist yet: not an error, retried later
        assert TableRoute(4, 1002, "late0", None) in fw.missing

        # installing again adds nothing
        fw.apply(cfg)
        assert len(hrneo_lines(ns, "iptables", "filter")) == 4
        assert len(hrneo_lines(ns, "iptables", "mangle")) == 4
        assert len(fwmark_rules(ns, 4)) == 2

        # the VPN comes up late; firmware wipes one of our rules: reconcile fixes both
        ns.sh("ip link add late0 type veth peer name late0p")
        ns.sh("ip link set late0p up")
        ns.sh("ip link set late0 up")
        ns.sh(["iptables", "-w", "-t", "filter", "-F", "OUTPUT"])
        assert len(hrneo_lines(ns, "iptables", "filter")) == 2
        assert fw.reconcile() >= 3
        assert len(hrneo_lines(ns, "iptables", "filter")) == 4
        assert any(line.startswith("default dev late0") for line in table_routes(ns, 4, 1002))
        assert not fw.missing
    except BaseException:
        fw.stop()
        raise

    # crash: fw never stops; a new instance starts over the leftovers
    fw2 = make()
    fw2.start(cfg)
    try:
        assert len(hrneo_lines(ns, "iptables", "filter")) == 4
        assert len(hrneo_lines(ns, "ip6tables", "filter")) == 4
        assert len(hrneo_lines(ns, "iptables", "mangle")) == 4
        assert len(fwmark_rules(ns, 4)) == 2 and len(fwmark_rules(ns, 6)) == 1
    finally:
        fw2.stop()

    for prog in ("iptables", "ip6tables"):
        for table in ("filter", "mangle"):
            assert hrneo_lines(ns, prog, table) == []
    assert fwmark_rules(ns, 4) == [] and fwmark_rules(ns, 6) == []
    assert table_routes(ns, 4, 1001) == [] and table_routes(ns, 6, 1001) == []
    assert table_routes(ns, 4, 1002) == []


def test_stale_cleanup_leaves_foreign_rules(
    setup: tuple[Netns, Config, Callable[[], Firewall]],
) -> None:
    ns, cfg, make = setup
    foreign = ["iptables", "-w", "-t", "filter", "-A", "OUTPUT", "-p", "udp", "--sport", "53",
               "-m", "comment", "--comment", "someone else", "-j", "ACCEPT"]  # fmt: skip
    ns.sh(foreign)
    ns.sh("ip -4 rule add fwmark 0x55 table 55 priority 8000")
    fw = make()
    fw.start(cfg)
    fw.stop()
    out = ns.sh(["iptables", "-w", "-t", "filter", "-S", "OUTPUT"]).stdout
    assert "someone else" in out and "hrneo:" not in out
    assert any("0x55" in line for line in fwmark_rules(ns, 4))
