"""The marking rules of a policy with `clients`, for both backends, on fake runners
(no root): the exact iptables argv and nft text, reconcile, reload and the
cleanup of rules a crashed run left."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from hrneo.config import Config, load_config
from hrneo.firewall import Firewall, IpRule, IptRule, TableRoute, desired_items
from hrneo.firewall_nft import NftFirewall, desired_rules, ruleset_script

CONFIG = """\
backend: {backend}
nflog_group: 100
firewall:
  dns_chains: [FORWARD]
policies:
  - name: vpn1
    ipset: hr_vpn1
    ipset6: hr_vpn1_v6
    domains: [example.org]
    clients: [198.51.100.0/25, 192.0.2.2, "2001:db8:1::/64"]
    route: {{interface: wg0, table: 1001, mark: 0x1001}}
  - name: kids
    ipset: hr_kids
    ipset6: hr_kids_v6
    domains: [example.net]
    clients: [192.0.2.20/32]
    route: {{interface: wg1, table: 1002, mark: 0x20000, mask: 0xff0000}}
  - name: all
    ipset: hr_all
    domains: [example.com]
    route: {{interface: wg2, table: 1003, mark: 0x3}}
"""


def config(tmp_path: Path, backend: str = "ipset", text: str = CONFIG) -> Config:
    path = tmp_path / "hrneo.yaml"
    path.write_text(text.format(backend=backend))
    return load_config(str(path))[0]


def mark_spec(setname: str, policy: str, mark: str) -> list[str]:
    return ["-m", "set", "--match-set", setname, "dst", "-m", "comment", "--comment",
            f"hrneo:{policy}", "-j", "MARK", "--set-xmark", mark]  # fmt: skip


VPN1 = mark_spec("hr_vpn1", "vpn1", "0x1001/0xffffffff")
VPN1_V6 = mark_spec("hr_vpn1_v6", "vpn1", "0x1001/0xffffffff")
KIDS = mark_spec("hr_kids", "kids", "0x20000/0xff0000")
ALL = mark_spec("hr_all", "all", "0x3/0xffffffff")


class Runner:
    """Records argv; `-C` finds the rules in `present` (all, when None)."""

    def __init__(self, present: list[list[str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.present = present
        self.listing = ""

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        rc = 0
        if "-C" in argv and self.present is not None:
            rc = 0 if argv in self.present else 1
        listing = argv[-1] == "-S" or argv[-3:] == ["table", "inet", "hrneo"]
        out = self.listing if listing else ""
        return subprocess.CompletedProcess(argv, rc, out, "")

    def inserted(self) -> list[list[str]]:
        return [c for c in self.calls if "-I" in c and "mangle" in c]


# ------------------------------------------------------------------ iptables


def test_iptables_marks_only_the_clients_in_prerouting(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runner = Runner(present=[])
    Firewall(cfg.firewall, runner=runner).apply(cfg)
    ipt = ["iptables", "-w", "-t", "mangle", "-I"]
    ip6t = ["ip6tables", "-w", "-t", "mangle", "-I"]
    assert runner.inserted() == [
        [*ipt, "PREROUTING", "1", "-s", "198.51.100.0/25", *VPN1],
        [*ipt, "PREROUTING", "1", "-s", "192.0.2.2", *VPN1],
        [*ip6t, "PREROUTING", "1", "-s", "2001:db8:1::/64", *VPN1_V6],
        [*ipt, "PREROUTING", "1", "-s", "192.0.2.20", *KIDS],
        # a policy without clients: every device, and the router's own traffic
        [*ipt, "PREROUTING", "1", *ALL],
        [*ipt, "OUTPUT", "1", *ALL],
    ]
    # checked before each insert, with the same words
    assert ["iptables", "-w", "-t", "mangle", "-C", "PREROUTING", "-s", "192.0.2.2",
            *VPN1] in runner.calls  # fmt: skip


def test_a_family_without_clients_gets_no_marking_but_keeps_its_routes(tmp_path: Path) -> None:
    items = desired_items(config(tmp_path))
    kids6 = [i for i in items if isinstance(i, IptRule) and "hr_kids_v6" in i.spec]
    assert kids6 == []  # kids lists no IPv6 client: nobody's IPv6 is marked
    assert IpRule(6, 0x20000, 1002, 9000, 0xFF0000) in items
    assert TableRoute(6, 1002, "wg1", None) in items
    marks = [i for i in items if isinstance(i, IptRule) and i.table == "mangle"]
    assert len(marks) == 6
    assert [i.chain for i in marks if i.chain == "OUTPUT"] == ["OUTPUT"]  # policy "all" only


def test_iptables_reconcile_puts_back_a_vanished_client_rule(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runner = Runner()  # everything is there
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    assert runner.inserted() == []
    gone = ["iptables", "-w", "-t", "mangle", "-C", "PREROUTING", "-s", "192.0.2.2", *VPN1]
    runner.present = [
        ["iptables" if it.family == 4 else "ip6tables", "-w", "-t", it.table, "-C", it.chain,
         *it.spec]
        for it in fw.items
        if isinstance(it, IptRule)
    ]  # fmt: skip
    runner.present.remove(gone)
    runner.calls.clear()
    assert fw.reconcile() >= 1  # (the fake shows no ip rules or routes: those count too)
    assert runner.inserted() == [
        ["iptables", "-w", "-t", "mangle", "-I", "PREROUTING", "1", "-s", "192.0.2.2", *VPN1]
    ]
    assert not fw.missing


def test_iptables_reload_with_other_clients_swaps_the_rules(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runner = Runner(present=[])
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    other = config(tmp_path, text=CONFIG.replace("192.0.2.2, ", "192.0.2.3, "))
    runner.calls.clear()
    fw.apply(other)
    deleted = [c for c in runner.calls if "-D" in c]
    assert deleted == [
        ["iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-s", "192.0.2.2", *VPN1]
    ]
    assert runner.inserted() == [
        ["iptables", "-w", "-t", "mangle", "-I", "PREROUTING", "1", "-s", "192.0.2.3", *VPN1]
    ]


def test_stale_client_rules_are_found_by_their_comment(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runner = Runner()
    # as `iptables -S` prints what a crashed run left
    runner.listing = (
        "-P PREROUTING ACCEPT\n"
        "-A PREROUTING -s 192.0.2.2/32 -m set --match-set hr_vpn1 dst -m comment "
        "--comment hrneo:vpn1 -j MARK --set-xmark 0x1001/0xffffffff\n"
        "-A PREROUTING -s 192.0.2.9/32 -j MARK --set-xmark 0x9/0xffffffff\n"
    )
    fw = Firewall(cfg.firewall, runner=runner)
    fw._cleanup_iptables()
    deletes = [c for c in runner.calls if "-D" in c and "mangle" in c]
    assert ["iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-s", "192.0.2.2/32",
            *VPN1] in deletes  # fmt: skip
    assert not any("192.0.2.9/32" in c for c in deletes)


# ------------------------------------------------------------------ nftables


KIDS_MARK = "meta mark set meta mark and 0xff00ffff or 0x20000"  # only the mask's bits


def test_nft_marks_only_the_clients_in_prerouting(tmp_path: Path) -> None:
    rules = [(r.chain, r.text, r.tag) for r in desired_rules(config(tmp_path, "nftables"))]
    assert rules[2:] == [
        ("g100_mark_prerouting",
         "ip saddr { 198.51.100.0/25, 192.0.2.2 } ip daddr @hr_vpn1 meta mark set 0x1001",
         "hrneo:vpn1:4"),
        ("g100_mark_prerouting",
         "ip6 saddr { 2001:db8:1::/64 } ip6 daddr @hr_vpn1_v6 meta mark set 0x1001",
         "hrneo:vpn1:6"),
        ("g100_mark_prerouting",
         f"ip saddr {{ 192.0.2.20 }} ip daddr @hr_kids {KIDS_MARK}",
         "hrneo:kids:4"),
        ("g100_mark_prerouting", "ip daddr @hr_all meta mark set 0x3", "hrneo:all:4"),
        ("g100_mark_output", "ip daddr @hr_all meta mark set 0x3", "hrneo:all:4"),
    ]  # fmt: skip


def test_nft_without_any_unlimited_policy_has_no_output_chain(tmp_path: Path) -> None:
    text = CONFIG[: CONFIG.index("  - name: all")]
    cfg = config(tmp_path, "nftables", text)
    script = ruleset_script(desired_rules(cfg), [100]).splitlines()
    i = script.index("add chain inet hrneo g100_mark_output")
    assert script[i + 1 : i + 3] == [
        "flush chain inet hrneo g100_mark_output",
        "delete chain inet hrneo g100_mark_output",
    ]
    assert (
        "add rule inet hrneo g100_mark_prerouting ip saddr { 198.51.100.0/25, 192.0.2.2 } "
        'ip daddr @hr_vpn1 meta mark set 0x1001 comment "hrneo:vpn1:4"'
    ) in script


def test_nft_reconcile_puts_back_a_vanished_client_rule(tmp_path: Path) -> None:
    cfg = config(tmp_path, "nftables")
    runner = Runner()
    scripts: list[str] = []

    def script_runner(argv: Sequence[str], script: str) -> subprocess.CompletedProcess[str]:
        scripts.append(script)
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    fw = NftFirewall(cfg.firewall, runner=runner, script_runner=script_runner)
    fw.start(cfg)
    assert len(scripts) == 1
    listing = "".join(f'chain {r.chain} {{\n\t{r.text} comment "{r.tag}"\n' for r in fw.rules)
    runner.listing = listing
    fw.reconcile()
    assert len(scripts) == 1  # all there
    # nft lists the rule back in its own words; the comment is what is compared
    runner.listing = listing.replace('comment "hrneo:vpn1:6"', "")
    assert fw.reconcile() >= 1
    assert len(scripts) == 2 and scripts[1] == scripts[0]
