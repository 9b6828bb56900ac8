"""The firewall commands hrneo runs for a sample config, on a fake runner (no root)."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

from hrneo.config import Config, load_config
from hrneo.firewall import Firewall, IpRule, IptRule, TableRoute, desired_items


class FakeRunner:
    """Records argv; `-C` (check) and `show` find nothing, everything else succeeds."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail_route = False

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        rc = 1 if "-C" in argv else 0
        if self.fail_route and "route" in argv and "replace" in argv:
            rc = 1
        return subprocess.CompletedProcess(argv, rc, "", "Cannot find device" if rc else "")


CONFIG = """\
nflog_group: 100
control_socket: {sock}
firewall:
  dns_chains: [OUTPUT]
  ipv6: true
  recheck_interval: 0
policies:
  - name: vpn1
    ipset: hr_vpn1
    ipset6: hr_vpn1_v6
    timeout: 600
    reconnect: true
    domains: [example.org]
    static: [203.0.113.0/24]
    route:
      interface: wg0
      table: 1001
      mark: 0x1001
  - name: plain
    ipset: hr_plain
    reconnect: false
    domains: [example.net, www.example.org]
"""


def make(tmp_path: Path, text: str = CONFIG) -> tuple[FakeRunner, Config]:
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(text).format(sock=tmp_path / "hrneo.sock"))
    cfg, _ = load_config(str(path))
    return FakeRunner(), cfg


# ------------------------------------------------------------------ firewall commands


def test_firewall_argv_for_sample_config(tmp_path: Path) -> None:
    runner, cfg = make(tmp_path)
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    nflog = ["-p", "udp", "--sport", "53", "-m", "comment", "--comment", "hrneo:dns",
             "-j", "NFLOG", "--nflog-group", "100"]  # fmt: skip
    mark = ["-m", "set", "--match-set", "hr_vpn1", "dst", "-m", "comment", "--comment",
            "hrneo:vpn1", "-j", "MARK", "--set-xmark", "0x1001/0xffffffff"]  # fmt: skip
    mark6 = [w.replace("hr_vpn1", "hr_vpn1_v6") for w in mark]
    expect = [
        ["iptables", "-w", "-t", "filter", "-C", "OUTPUT", *nflog],
        ["iptables", "-w", "-t", "filter", "-I", "OUTPUT", "1", *nflog],
        ["iptables", "-w", "-t", "mangle", "-C", "PREROUTING", *mark],
        ["iptables", "-w", "-t", "mangle", "-I", "PREROUTING", "1", *mark],
        ["iptables", "-w", "-t", "mangle", "-I", "OUTPUT", "1", *mark],
        ["ip", "-4", "rule", "add", "fwmark", "0x1001/0xffffffff", "table", "1001",
         "priority", "9000"],
        ["ip", "-4", "route", "replace", "default", "dev", "wg0", "table", "1001"],
        ["ip6tables", "-w", "-t", "filter", "-I", "OUTPUT", "1", *nflog],
        ["ip6tables", "-w", "-t", "mangle", "-I", "PREROUTING", "1", *mark6],
        ["ip", "-6", "rule", "add", "fwmark", "0x1001/0xffffffff", "table", "1001",
         "priority", "9000"],
        ["ip", "-6", "route", "replace", "default", "dev", "wg0", "table", "1001"],
    ]  # fmt: skip
    for argv in expect:
        assert argv in runner.calls, argv
    inserts = [c for c in runner.calls if "-I" in c]
    assert len(inserts) == 2 * 2 + 2 * 2  # (udp+tcp NFLOG, 2 mark chains) x 2 families
    items = desired_items(cfg)
    assert IpRule(6, 0x1001, 1001, 9000) in items
    assert TableRoute(4, 1001, "wg0", None) in items
    assert sum(isinstance(i, IptRule) for i in items) == 8


def test_firewall_via_gateway_and_late_interface(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "      interface: wg0\n", "      interface: eth9\n      gateway: 192.0.2.1\n"
    )
    text = text.replace("      table: 1001\n", "      gateway6: 2001:db8::1\n      table: 1001\n")
    runner, cfg = make(tmp_path, text)
    runner.fail_route = True  # eth9 does not exist yet
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)  # must not raise
    route4 = ["ip", "-4", "route", "replace", "default", "via", "192.0.2.1", "dev", "eth9",
              "table", "1001"]  # fmt: skip
    assert route4 in runner.calls
    assert TableRoute(4, 1001, "eth9", "192.0.2.1") in fw.missing
    runner.fail_route = False
    runner.calls.clear()
    fw.reconcile()
    assert route4 in runner.calls and not fw.missing


def test_stale_rules_cleaned_from_iptables_save_output(tmp_path: Path) -> None:
    _r, cfg = make(tmp_path)
    calls: list[list[str]] = []
    listing = (
        "-P OUTPUT ACCEPT\n"
        "-A OUTPUT -p udp -m udp --sport 53 -m comment --comment hrneo:dns -j NFLOG "
        "--nflog-group 100\n"
        '-A OUTPUT -p tcp -m comment --comment "someone else" -j ACCEPT\n'
    )

    def runner(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        calls.append(argv)
        out = ""
        if argv[-1] == "-S" and argv[0] == "iptables" and "filter" in argv:
            out = listing
        if argv[-2:] == ["rule", "show"] and argv[1] == "-4":
            out = "0:\tfrom all lookup local\n9000:\tfrom all fwmark 0x77 lookup 77\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    fw = Firewall(cfg.firewall, runner=runner)
    assert fw.cleanup_stale() == 2
    assert ["iptables", "-w", "-t", "filter", "-D", "OUTPUT", "-p", "udp", "-m", "udp",
            "--sport", "53", "-m", "comment", "--comment", "hrneo:dns", "-j", "NFLOG",
            "--nflog-group", "100"] in calls  # fmt: skip
    assert ["ip", "-4", "rule", "del", "priority", "9000", "fwmark", "0x77", "table",
            "77"] in calls  # fmt: skip
    assert not any("someone else" in c for c in calls if "-D" in c)
