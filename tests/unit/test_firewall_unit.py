"""The firewall commands hrneo runs for a sample config, on a fake runner (no root)."""

from __future__ import annotations

import errno
import logging
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from hrneo.config import Config, load_config
from hrneo.errors import FirewallError
from hrneo.firewall import (
    CANNOT_RUN,
    KILL_SWITCH_METRIC,
    BlockRoute,
    Firewall,
    IpRule,
    IptRule,
    TableRoute,
    desired_items,
    run_command,
)


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
    nflog = ["-p", "udp", "--sport", "53",
             "-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY",
             "-m", "comment", "--comment", "hrneo:dns",
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


# ------------------------------------------------------------------ verify_answers


def capture_specs(cfg: Config, unverified: tuple[int, ...] = ()) -> list[IptRule]:
    return [i for i in desired_items(cfg, unverified) if isinstance(i, IptRule) and i.essential]


def test_every_capture_rule_is_verified_by_default(tmp_path: Path) -> None:
    text = CONFIG.replace("dns_chains: [OUTPUT]", "dns_chains: [OUTPUT, FORWARD, INPUT]")
    _r, cfg = make(tmp_path, text)
    rules = capture_specs(cfg)
    assert len(rules) == 2 * 3 * 2  # families x chains x (udp, tcp)
    for r in rules:
        at = r.spec.index("--sport")
        assert r.spec[at : at + 8] == ("--sport", "53", "-m", "conntrack", "--ctstate",
                                       "ESTABLISHED", "--ctdir", "REPLY"), r.spec  # fmt: skip
        assert r.verified
    off = make(tmp_path, text.replace("  ipv6: true\n", "  ipv6: true\n  verify_answers: false\n"))[
        1
    ]
    assert all("conntrack" not in r.spec and not r.verified for r in capture_specs(off))
    # a family without the match: only its rules go unverified
    mixed = capture_specs(cfg, (6,))
    assert all(("conntrack" in r.spec) == (r.family == 4) for r in mixed)


class NoConntrack(FakeRunner):
    """iptables of `family` has no conntrack match (as a router without xt_conntrack)."""

    def __init__(self, family: int, message: str) -> None:
        super().__init__()
        self.prog = "iptables" if family == 4 else "ip6tables"
        self.message = message

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        if argv[0] == self.prog and "conntrack" in argv and "-I" in argv:
            self.calls.append(argv)
            return subprocess.CompletedProcess(argv, 1, "", self.message)
        return super().__call__(argv)


@pytest.mark.parametrize(
    "message",
    [
        "iptables v1.4.21: Couldn't load match `conntrack':No such file or directory",
        "iptables: No chain/target/match by that name.",
        "Warning: Extension conntrack revision 0 not supported, missing kernel module?",
        'iptables v1.4.7: unknown option "--ctdir"',
    ],
)
def test_without_conntrack_match_rules_go_in_unverified_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    runner, cfg = make(tmp_path)
    runner = NoConntrack(6, message)
    fw = Firewall(cfg.firewall, runner=runner)
    with caplog.at_level(logging.WARNING, logger="hrneo.firewall"):
        fw.apply(cfg)
    assert fw.unverified == {6}
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "verify_answers" in warning and "ip6tables has no conntrack match" in warning
    assert "ANY packet from port 53" in warning
    installed = [c for c in runner.calls if "-I" in c and "NFLOG" in c and "conntrack" not in c]
    assert {c[0] for c in installed} == {"ip6tables"}  # IPv4 stays verified
    assert any(c[0] == "iptables" and "conntrack" in c and "-I" in c for c in runner.calls)
    # every item is recorded: stop removes what went in, nothing else
    runner.calls.clear()
    fw.stop()
    removed = [c for c in runner.calls if "-D" in c and "NFLOG" in c]
    assert len(removed) == 4
    assert all(("conntrack" in c) == (c[0] == "iptables") for c in removed)


def test_missing_chain_is_not_mistaken_for_a_missing_match(tmp_path: Path) -> None:
    _r, cfg = make(tmp_path)

    def runner(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        if ("-I" in argv and "NFLOG" in argv) or argv[-2:] == ["-S", "OUTPUT"]:
            return subprocess.CompletedProcess(
                argv, 1, "", "iptables: No chain/target/match by that name."
            )
        return subprocess.CompletedProcess(argv, 1 if "-C" in argv else 0, "", "")

    fw = Firewall(cfg.firewall, runner=runner)
    with pytest.raises(FirewallError, match="cannot install"):
        fw.apply(cfg)
    assert fw.unverified == set()


# ------------------------------------------------------------------ kill switch

KILL = CONFIG.replace("      mark: 0x1001\n", "      mark: 0x1001\n      kill_switch: true\n")


def test_kill_switch_adds_an_unreachable_default_below_the_route(tmp_path: Path) -> None:
    runner, cfg = make(tmp_path, KILL)
    items = desired_items(cfg)
    for fam in (4, 6):
        block = items.index(BlockRoute(fam, 1001))
        assert block < items.index(IpRule(fam, 0x1001, 1001, 9000))  # blocked before routed
    assert BlockRoute(4, 1001) not in desired_items(make(tmp_path)[1])
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    want = ["ip", "-4", "route", "replace", "unreachable", "default", "metric",
            str(KILL_SWITCH_METRIC), "table", "1001"]  # fmt: skip
    assert want in runner.calls
    assert [w.replace("-4", "-6") for w in want] in runner.calls
    runner.calls.clear()
    fw.stop()
    assert [w.replace("replace", "del") for w in want] in runner.calls


def test_kill_switch_is_checked_by_the_recheck(tmp_path: Path) -> None:
    _r, cfg = make(tmp_path, KILL)
    shown = {"4": "", "6": ""}

    def runner(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        out = ""
        if argv[:2] in (["ip", "-4"], ["ip", "-6"]) and argv[2:4] == ["route", "show"]:
            out = shown[argv[1][1]]
        return subprocess.CompletedProcess(argv, 0, out, "")

    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    shown["4"] = f"unreachable default metric {KILL_SWITCH_METRIC}\ndefault dev wg0\n"
    shown["6"] = f"unreachable default dev lo metric {KILL_SWITCH_METRIC} pref medium\n"
    assert fw._present(BlockRoute(4, 1001)) and fw._present(BlockRoute(6, 1001))
    assert fw._present(TableRoute(4, 1001, "wg0", None))
    assert not fw._present(TableRoute(6, 1001, "wg0", None))


def test_gateway_without_gateway6_warns_about_the_kill_switch(tmp_path: Path) -> None:
    text = KILL.replace(
        "      interface: wg0\n", "      interface: eth9\n      gateway: 192.0.2.1\n"
    )
    path = tmp_path / "hrneo.yaml"
    path.write_text(text.format(sock=tmp_path / "s"))
    cfg, warnings = load_config(str(path))
    assert any("refused (kill_switch)" in w for w in warnings), warnings
    items = desired_items(cfg)
    assert BlockRoute(6, 1001) in items and TableRoute(4, 1001, "eth9", "192.0.2.1") in items
    assert not any(isinstance(i, TableRoute) and i.family == 6 for i in items)


# ------------------------------------------------------------------ out of descriptors


def test_run_command_survives_emfile(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(subprocess, "run", boom)
    proc = run_command(["iptables", "-S"])
    assert proc.returncode == CANNOT_RUN and "Too many open files" in proc.stderr


def test_reconcile_leaves_what_it_cannot_check(tmp_path: Path) -> None:
    runner, cfg = make(tmp_path)
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    calls: list[list[str]] = []

    def starved(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), CANNOT_RUN, "", "cannot run: EMFILE")

    fw.run = starved
    assert fw.reconcile() == 0
    assert all("-C" in c or "show" in c for c in calls)  # checked, nothing inserted blindly
    assert not fw.missing
