"""The nftables rules and the backend choice for a sample config, on fake runners (no root)."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from hrneo.backends import choose_backend
from hrneo.config import Config, load_config
from hrneo.errors import FirewallError
from hrneo.firewall import IpRule, TableRoute
from hrneo.firewall_nft import (
    NftFirewall,
    capture_verdict,
    desired_rules,
    installed_tags,
    mark_statement,
    owned_groups,
    ruleset_script,
)

CONFIG = """\
backend: nftables
nflog_group: 100
firewall:
  dns_chains: [OUTPUT, FORWARD]
  ipv6: {ipv6}
  verify_answers: {verify}
policies:
  - name: vpn1
    ipset: hr_vpn1
    ipset6: hr_vpn1_v6
    domains: [example.org]
    route: {{interface: wg0, table: 1001, mark: 0x1001}}
  - name: masked
    ipset: hr_masked
    domains: [example.net]
    route: {{interface: wg1, table: 1002, mark: 0x10000, mask: 0xff0000}}
  - name: fw4
    nftset: "4#inet#fw4#vpn_domains"
    domains: [example.com]
    route: {{interface: wg2, table: 1003, mark: 0x3}}
  - name: plain
    ipset: hr_plain
    domains: [example.info]
"""


def config(tmp_path: Path, ipv6: bool = True, verify: bool = True) -> Config:
    path = tmp_path / "hrneo.yaml"
    text = CONFIG.format(ipv6=str(ipv6).lower(), verify=str(verify).lower())
    path.write_text(textwrap.dedent(text))
    return load_config(str(path))[0]


class Fake:
    """Records commands and scripts; `nft -t list` answers with `listing`."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.scripts: list[str] = []
        self.listing = ""
        self.fail_script = False

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        out = self.listing if "list" in argv and "table" in argv else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    def script(self, argv: Sequence[str], script: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        self.scripts.append(script)
        rc = 1 if self.fail_script else 0
        return subprocess.CompletedProcess(list(argv), rc, "", "Error: boom" if rc else "")


def test_rules_of_the_sample_config(tmp_path: Path) -> None:
    rules = desired_rules(config(tmp_path))
    text = [(r.chain, r.text, r.tag) for r in rules]
    verified = "sport 53 ct state established ct direction reply counter log group 100"
    assert text[:4] == [
        ("g100_dns_output", f"udp {verified}", "hrneo:dns-udp"),
        ("g100_dns_output", f"tcp {verified}", "hrneo:dns-tcp"),
        ("g100_dns_forward", f"udp {verified}", "hrneo:dns-udp"),
        ("g100_dns_forward", f"tcp {verified}", "hrneo:dns-tcp"),
    ]
    marks = text[4:]
    assert (
        "g100_mark_prerouting",
        "ip daddr @hr_vpn1 meta mark set 0x1001",
        "hrneo:vpn1:4",
    ) in marks
    assert (
        "g100_mark_output",
        "ip6 daddr @hr_vpn1_v6 meta mark set 0x1001",
        "hrneo:vpn1:6",
    ) in marks
    masked = "ip daddr @hr_masked meta mark set meta mark and 0xff00ffff or 0x10000"
    assert ("g100_mark_output", masked, "hrneo:masked:4") in marks
    # The fw4 set lives in another table: rules cannot reach it from inet hrneo.
    assert not any("vpn_domains" in t for _, t, _ in marks)
    assert len(marks) == 6
    assert all(r.essential == r.chain.startswith("g100_dns_") for r in rules)


def test_ipv4_only_and_unverified(tmp_path: Path) -> None:
    rules = desired_rules(config(tmp_path, ipv6=False, verify=False))
    assert rules[0].text == "meta nfproto ipv4 udp sport 53 counter log group 100"
    assert not any("ip6 daddr" in r.text for r in rules)


def test_statements() -> None:
    assert capture_verdict(7) == "log group 7"
    assert capture_verdict(7, "nfqueue", 3) == "queue num 3 bypass"
    assert mark_statement(0x1001, 0xFFFFFFFF) == "meta mark set 0x1001"
    assert mark_statement(0x100, 0xFF00) == "meta mark set meta mark and 0xffff00ff or 0x100"


def test_script_flushes_wanted_chains_and_deletes_the_others(tmp_path: Path) -> None:
    script = ruleset_script(desired_rules(config(tmp_path)), [100, 7])
    lines = script.splitlines()
    assert lines[0] == "add table inet hrneo"
    assert (
        "add chain inet hrneo g100_dns_forward "
        "{ type filter hook forward priority filter + 10; policy accept; }"
    ) in lines
    assert (
        "add chain inet hrneo g100_mark_output "
        "{ type route hook output priority mangle; policy accept; }"
    ) in lines
    assert "flush chain inet hrneo g100_dns_forward" in lines
    # unwanted chains of this daemon, and every chain of another group (a reload
    # to another nflog group; a crashed run): deleted in the same transaction
    gone = ["g100_dns_input", "g100_dns_prerouting", "g100_dns_postrouting"]
    for unwanted in [*gone, "g7_dns_forward", "g7_mark_output"]:
        i = lines.index(f"add chain inet hrneo {unwanted}")
        assert lines[i + 1 : i + 3] == [
            f"flush chain inet hrneo {unwanted}",
            f"delete chain inet hrneo {unwanted}",
        ]
    assert (
        "add rule inet hrneo g100_mark_prerouting ip daddr @hr_vpn1 meta mark set 0x1001 "
        'comment "hrneo:vpn1:4"'
    ) in lines
    # Stop: every chain goes, in one transaction; nothing names a set.
    stop = ruleset_script([], [100])
    assert stop.count("delete chain") == 7 and "@" not in stop and "g7" not in stop


LISTING = """\
table inet hrneo {
\tset hr_vpn1 {
\t\ttype ipv4_addr
\t}

\tchain g100_dns_forward {
\t\ttype filter hook forward priority filter + 10; policy accept;
\t\tudp sport 53 ct state established ct direction reply counter packets 3 bytes 300 \
log group 100 comment "hrneo:dns-udp"
\t}
}
"""


def test_installed_tags() -> None:
    tags = installed_tags(LISTING)
    assert tags == {("g100_dns_forward", "hrneo:dns-udp"): 1}
    assert owned_groups(LISTING + "\tchain g7_mark_output {\n\tchain mine {\n") == {100, 7}


def test_firewall_start_reconcile_stop(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    fake = Fake()
    fw = NftFirewall(cfg.firewall, prefix=["ip", "netns", "exec", "x"], runner=fake.run,
                     script_runner=fake.script)  # fmt: skip
    fw.start(cfg)
    assert ["ip", "netns", "exec", "x", "nft", "-f", "-"] in fake.calls
    assert fake.scripts == [ruleset_script(desired_rules(cfg), [100])]
    routes = [i for i in fw.items if isinstance(i, (IpRule, TableRoute))]
    assert {r.table for r in routes} == {1001, 1002, 1003}  # fw4's policy still gets its route
    assert fw.missing == set()
    # Everything gone from the table: one transaction puts it all back.
    fake.listing = LISTING
    fixed = fw.reconcile()
    assert fixed >= len(fw.rules) - 1  # (the fake shows no ip rules either: those count too)
    assert len(fake.scripts) == 2
    # All there: nothing is sent.
    fake.listing = "".join(f'chain {r.chain} {{\n\t{r.text} comment "{r.tag}"\n' for r in fw.rules)
    fw.reconcile()
    assert len(fake.scripts) == 2
    fw.stop()
    assert fake.scripts[-1] == ruleset_script([], [100])
    assert fw.items == []
    assert "nft inet hrneo g100_dns_output: udp sport 53" in fw.describe(desired_rules(cfg)[0])


def test_a_refused_transaction_is_a_firewall_error(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    fake = Fake()
    fake.fail_script = True
    fw = NftFirewall(cfg.firewall, runner=fake.run, script_runner=fake.script)
    with pytest.raises(FirewallError, match="boom"):
        fw.start(cfg)
    assert len(fw.missing) >= len(fw.rules) > 0


def test_backend_choice(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert choose_backend(cfg).name == "nftables"
    auto = Config(path=cfg.path, backend="auto", firewall=cfg.firewall)

    def have_all(prog: str) -> str | None:
        return f"/usr/sbin/{prog}"

    chosen = choose_backend(auto, which=have_all, ipset_probe=lambda: None)
    assert chosen.name == "ipset" and "ipset module and the iptables programs" in chosen.why
    chosen = choose_backend(auto, which=lambda p: None, ipset_probe=lambda: None)
    assert chosen.name == "nftables" and "iptables" in chosen.why and "not found" in chosen.why
    chosen = choose_backend(auto, which=have_all, ipset_probe=lambda: "no ip_set module")
    assert (chosen.name, chosen.why) == ("nftables", "backend auto: no ip_set module")
