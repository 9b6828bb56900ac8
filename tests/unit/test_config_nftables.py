"""Config for the nftables backend: `backend`, per-policy `nftset` (dnsmasq's
notation), `firewall.verify_answers`, and what `hrneo check` says about them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hrneo.config import ConfigError, load_config
from hrneo.nftnames import parse_item, parse_nftset


def load(tmp_path: Path, text: str) -> tuple[object, list[str]]:
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(str(path))


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, text)
    return ei.value.errors


POLICY = """\
policies:
  - name: vpn
    ipset: hr_vpn
    ipset6: hr_vpn6
    domains: [example.org]
"""


def test_backend_defaults_to_ipset_and_verify_answers_to_true(tmp_path: Path) -> None:
    cfg, warnings = load(tmp_path, POLICY)
    assert cfg.backend == "ipset"  # type: ignore[attr-defined]
    assert cfg.firewall.verify_answers is True  # type: ignore[attr-defined]
    assert cfg.firewall.nft == "nft"  # type: ignore[attr-defined]
    assert warnings == []
    pol = cfg.policies[0]  # type: ignore[attr-defined]
    # Without nftset, the nftables sets are the ipset names in hrneo's own table.
    assert (pol.nft_set4, pol.nft_set6) == ("inet#hrneo#hr_vpn", "inet#hrneo#hr_vpn6")


@pytest.mark.parametrize("backend", ["ipset", "nftables", "auto"])
def test_backend_values(tmp_path: Path, backend: str) -> None:
    cfg, _ = load(tmp_path, f"backend: {backend}\n" + POLICY)
    assert cfg.backend == backend  # type: ignore[attr-defined]


def test_bad_backend_and_verify_answers(tmp_path: Path) -> None:
    errs = errors(
        tmp_path,
        "backend: iptables\nfirewall:\n  verify_answers: maybe\n" + POLICY,
    )
    assert any(":1:" in e and "one of ipset, nftables, auto" in e for e in errs), errs
    assert any(":3:" in e and "verify_answers" in e for e in errs), errs


def test_nftset_in_dnsmasq_notation(tmp_path: Path) -> None:
    cfg, warnings = load(
        tmp_path,
        """\
        backend: nftables
        policies:
          - name: vpn
            nftset: "4#inet#fw4#vpn4,6#inet#fw4#vpn6"
            domains: [example.org]
            static: ["2001:db8::/32"]
          - name: plain
            nftset: "inet#fw4#vpn_domains"
            ipset6: hr_plain6
            domains: [example.net]
        """,
    )
    vpn, plain = cfg.policies  # type: ignore[attr-defined]
    assert vpn.nftset == "4#inet#fw4#vpn4,6#inet#fw4#vpn6"
    assert (vpn.nft_set4, vpn.nft_set6) == ("inet#fw4#vpn4", "inet#fw4#vpn6")
    assert vpn.ipset == "vpn4"  # `ipset` may be left out: named after the nft set
    # An item without 4#/6# is the IPv4 set; ipset6 still names one in inet hrneo.
    assert (plain.nft_set4, plain.nft_set6) == ("inet#fw4#vpn_domains", "inet#hrneo#hr_plain6")
    assert warnings == []


def test_nftset_errors_name_the_line(tmp_path: Path) -> None:
    errs = errors(
        tmp_path,
        """\
        backend: nftables
        policies:
          - name: a
            nftset: "4#inet#fw4#x,4#inet#fw4#y"
            domains: [example.org]
          - name: b
            nftset: "fw4"
            domains: [example.net]
          - name: c
            nftset: "6#inet#fw4#only6"
            domains: [example.com]
          - name: d
            nftset: "inet#fw4#1bad"
            domains: [example.info]
        """,
    )
    text = "\n".join(errs)
    assert ":4:" in text and "two IPv4 sets" in text
    assert ":7:" in text and "not [4#|6#][family#]table#set" in text
    assert "no `ipset` (nor an IPv4 set in `nftset`)" in text
    assert ":13:" in text and "a letter or _ first" in text


def test_nftset_with_backend_ipset_is_a_warning(tmp_path: Path) -> None:
    _, warnings = load(tmp_path, POLICY + '    nftset: "inet#fw4#x"\n')
    assert any("used only with backend nftables" in w for w in warnings), warnings


def test_nftables_needs_hooks_and_nft_names(tmp_path: Path) -> None:
    text = """\
        backend: {backend}
        firewall:
          dns_chains: [FORWARD, _NDM_DNS]
        policies:
          - name: vpn
            ipset: 1vpn
            domains: [example.org]
        """
    errs = errors(tmp_path, text.format(backend="nftables"))
    joined = "\n".join(errs)
    assert ":3:" in joined and "'_NDM_DNS' is no nftables hook" in joined
    assert ":6:" in joined and "ipset: invalid nftables set name '1vpn'" in joined
    # auto may choose ipset, where both are fine: warnings only.
    _, warnings = load(tmp_path, text.format(backend="auto"))
    assert sum("if backend auto chooses nftables" in w for w in warnings) == 2
    load(tmp_path, text.format(backend="ipset"))  # no complaint at all


def test_route_on_a_set_of_another_table_warns(tmp_path: Path) -> None:
    _, warnings = load(
        tmp_path,
        """\
        backend: nftables
        policies:
          - name: vpn
            nftset: "inet#fw4#vpn"
            domains: [example.org]
            route: {interface: wg0, table: 1001, mark: 0x1001}
        """,
    )
    assert any("inet fw4 vpn is in a table of your firewall" in w for w in warnings), warnings


def test_one_nft_set_for_two_policies_is_an_error(tmp_path: Path) -> None:
    errs = errors(
        tmp_path,
        """\
        backend: nftables
        policies:
          - name: a
            nftset: "inet#fw4#same"
            domains: [example.org]
          - name: b
            ipset: other
            nftset: "inet#fw4#same"
            domains: [example.net]
        """,
    )
    assert any("'inet#fw4#same' of policy 'b' is already used by policy 'a'" in e for e in errs)


@pytest.mark.parametrize(
    ("item", "want"),
    [
        ("4#inet#fw4#s", (4, "inet", "fw4", "s")),
        ("6#fw4#s6", (6, "inet", "fw4", "s6")),
        ("ip6#t#s", (6, "ip6", "t", "s")),
        ("ip#t#s", (4, "ip", "t", "s")),
        ("t#s", (4, "inet", "t", "s")),
    ],
)
def test_items(item: str, want: tuple[int, str, str, str]) -> None:
    s = parse_item(item)
    assert (s.version, s.family, s.table, s.name) == want
    assert parse_item(s.dnsmasq) == s


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "nftset is empty"),
        ("s", r"is not \[4#\|6#\]\[family#\]table#set"),
        ("6#ip#t#s", "a table of family ip holds no IPv6"),
        ("4#ip6#t#s", "a table of family ip6 holds no IPv4"),
        ("arp#t#s", "family 'arp' is not one of"),
        ("a#b#c#d#e", r"is not \[4#\|6#\]\[family#\]table#set"),
        (",", "nftset is empty"),
    ],
)
def test_bad_values(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_nftset(bad)
