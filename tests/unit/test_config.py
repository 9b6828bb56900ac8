"""Config loading: values, defaults, and errors that name the right file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hrneo.config import (
    DEFAULT_DNS_CHAINS,
    ConfigError,
    load_config,
    normalize_domain,
    parse_mark,
)

GOOD = """\
nflog_group: 7
firewall:
  dns_chains: [OUTPUT]
  ipv6: false
policies:
  - name: vpn1
    ipset: hr_vpn1
    ipset6: hr_vpn1_v6
    timeout: 600
    domains: [Example.COM, "*.example.org"]
    domain_files: [vpn1.list]
    static: [203.0.113.0/24, "2001:db8::1"]
    route:
      interface: wg0
      table: 1001
      mark: "0x1001"
"""


def write(tmp_path: Path, text: str, lists: dict[str, str] | None = None) -> str:
    for name, body in (lists or {}).items():
        (tmp_path / name).write_text(body)
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return ei.value.errors


def test_good_config_values_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, {"vpn1.list": "# c\n\nwww.example.net  # inline\nexample.com\n"})
    cfg, warnings = load_config(path)
    assert cfg.nflog_group == 7
    assert cfg.firewall.dns_chains == ("OUTPUT",)
    assert cfg.firewall.ipv6 is False
    assert cfg.firewall.manage_rules is True
    pol = cfg.policies[0]
    # lower-cased, '*.' stripped, duplicate inside the policy (file line 4) dropped
    assert pol.domains == ("example.com", "example.org", "www.example.net")
    assert pol.origin(2) == f"{tmp_path}/vpn1.list:3"
    assert pol.origin(0) == f"{path}:10"
    assert pol.static == ("203.0.113.0/24", "2001:db8::1")
    assert pol.route is not None and pol.route.mark == 0x1001 and pol.route.table == 1001
    assert pol.reconnect is True and pol.timeout == 600
    assert any(":10:" in w and "*." in w for w in warnings)


def test_defaults_when_omitted(tmp_path: Path) -> None:
    path = write(tmp_path, "policies:\n  - {name: p, ipset: s, domains: [example.com]}\n")
    cfg, warnings = load_config(path)
    assert cfg.nflog_group == 100
    assert cfg.firewall.dns_chains == DEFAULT_DNS_CHAINS == ("OUTPUT", "FORWARD")
    assert cfg.firewall.recheck_interval == 30
    assert cfg.policies[0].timeout == 3600
    assert cfg.control_socket == "/run/hrneo.sock"
    assert warnings == []


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("nflog_grup: 5\npolicies: []\n", 1, "did you mean 'nflog_group'"),
        ("nflog_group: 70000\npolicies: []\n", 1, "70000"),
        (
            "policies:\n  - name: p\n    ipset: this_set_name_is_far_too_long_for_ipset\n",
            3,
            "this_set_name_is_far_too_long_for_ipset",
        ),
        (
            (
                "policies:\n  - name: p\n    ipset: s\n    route:\n      interface: wg0\n"
                "      table: 254\n      mark: 1\n"
            ),
            6,
            "reserved",
        ),
        (
            (
                "policies:\n  - name: p\n    ipset: s\n    route:\n      interface: wg0\n"
                "      table: 5\n      mark: 0x100000000\n"
            ),
            7,
            "out of range",
        ),
        (
            (
                "policies:\n  - name: p\n    ipset: s\n    route:\n      interface: a/b\n"
                "      table: 5\n      mark: 1\n"
            ),
            5,
            "'a/b'",
        ),
        (
            (
                "policies:\n  - name: p\n    ipset: s\n    route:\n      interface: wg0\n"
                "      gateway: 2001:db8::1\n      table: 5\n      mark: 1\n"
            ),
            6,
            "not an IPv4",
        ),
        (
            (
                "policies:\n  - name: p\n    ipset: s\n    domains:\n      - ok.example\n"
                "      - bad..example\n"
            ),
            6,
            "bad..example",
        ),
        ("policies:\n  - name: p\n    ipset: s\n    static: [192.0.2.300]\n", 4, "192.0.2.300"),
        ("policies:\n  - name: p\n    ipset: s\n    timeout: -1\n", 4, "timeout"),
        ("policies:\n  - name: p\n    ipset: s\n    colour: red\n", 4, "unknown key 'colour'"),
        ("firewall:\n  ipv6: maybe\npolicies: []\n", 2, "true or false"),
        (
            "policies:\n  - name: p\n    ipset: s\n  - name: p\n    ipset: t\n",
            4,
            "duplicate policy",
        ),
        ("policies:\n  - name: p\n    ipset: s\n  - name: q\n    ipset: s\n", 4, "already used"),
        ("policies:\n  - name: p\n    ipset: s\n   bad: [\n", 4, "YAML syntax"),
    ],
)
def test_errors_name_file_line_and_value(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path, text)
    errs = errors_of(path)
    assert any(e.startswith(f"{path}:{line}:") and needle in e for e in errs), errs


def test_list_file_errors_name_the_list_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "policies:\n  - name: p\n    ipset: s\n    domain_files: [l.txt, missing.txt]\n",
        {"l.txt": "good.example\n# comment\nexa mple.com\n" + "a" * 64 + ".example\n"},
    )
    errs = errors_of(path)
    lst = tmp_path / "l.txt"
    assert any(e.startswith(f"{lst}:3:") and "exa mple.com" in e for e in errs), errs
    assert any(e.startswith(f"{lst}:4:") for e in errs), errs
    assert any(e.startswith(f"{path}:4:") and "missing.txt" in e for e in errs), errs
    assert not any(":1:" in e and "good.example" in e for e in errs)


def test_idn_to_punycode_and_leading_dot_warns() -> None:
    assert normalize_domain("Bücher.Example") == ("xn--bcher-kva.example", None)
    dom, warning = normalize_domain(".example.org")
    assert dom == "example.org" and warning and "'.'" in warning
    dom, warning = normalize_domain("*.example.org")
    assert dom == "example.org" and warning and "'*.'" in warning
    assert normalize_domain("example.org.") == ("example.org", None)
    with pytest.raises(ValueError, match="longer than 63 characters"):
        normalize_domain("x" * 64 + ".org")
    with pytest.raises(ValueError, match="longer than 253 characters"):
        normalize_domain(("a" * 60 + ".") * 5)


def test_marks() -> None:
    assert parse_mark("0x1001") == 0x1001
    assert parse_mark(4097) == 4097
    assert parse_mark("0xffffffff") == 0xFFFFFFFF
    for bad in (0, "0x0", "x", 2**32):
        with pytest.raises(ValueError, match=r"out of range 1\.\.0xFFFFFFFF|is not a number"):
            parse_mark(bad)
    with pytest.raises(TypeError):
        parse_mark(True)


def test_v6_static_needs_ipset6(tmp_path: Path) -> None:
    path = write(
        tmp_path, "policies:\n  - name: p\n    ipset: s\n    static:\n      - 2001:db8::/32\n"
    )
    errs = errors_of(path)
    assert any(e.startswith(f"{path}:5:") and "ipset6" in e for e in errs), errs


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "hrneo.yaml"
    cfg, _warnings = load_config(str(example))
    assert [p.name for p in cfg.policies] == ["vpn1", "direct"]
    assert "xn--bcher-kva.example" in cfg.policies[0].domains


def test_every_bad_value_of_a_policy_is_reported_in_one_run(tmp_path: Path) -> None:
    # A bad set name used to end the policy's checks before timeout/reconnect/maxelem.
    path = write(
        tmp_path,
        """\
        policies:
          - name: vpn1
            ipset: this_set_name_is_longer_than_the_kernel_allows
            timeout: -5
            reconnect: maybe
            maxelem: 0
            domains: [example.com]
        """,
    )
    errs = errors_of(path)
    assert any(e.startswith(f"{path}:3: ipset") for e in errs), errs
    assert any(e.startswith(f"{path}:4: timeout") and "-5" in e for e in errs), errs
    assert any(e.startswith(f"{path}:5: reconnect") for e in errs), errs
    assert any(e.startswith(f"{path}:6: maxelem") for e in errs), errs


def test_conntrack_events_defaults_on_and_is_a_boolean(tmp_path: Path) -> None:
    body = "policies:\n  - {name: p, ipset: s, domains: [example.com]}\n"
    cfg, _ = load_config(write(tmp_path, body))
    assert cfg.conntrack_events is True
    cfg, _ = load_config(write(tmp_path, "conntrack_events: false\n" + body))
    assert cfg.conntrack_events is False
    errs = errors_of(write(tmp_path, "conntrack_events: sometimes\n" + body))
    assert len(errs) == 1 and ":1:" in errs[0] and "conntrack_events" in errs[0]


def test_route_mask(tmp_path: Path) -> None:
    route = """\
        policies:
          - name: vpn1
            ipset: hr_vpn1
            domains: [example.com]
            route:
              interface: wg0
              table: 1001
              mark: {mark}
              mask: {mask}
        """
    cfg, _ = load_config(write(tmp_path, route.format(mark="0x10000", mask='"0xff0000"')))
    r = cfg.policies[0].route
    assert r is not None and (r.mark, r.mask) == (0x10000, 0xFF0000)
    errs = errors_of(write(tmp_path, route.format(mark="0x1001", mask="0xff00")))
    assert any(
        e.startswith(f"{tmp_path}/hrneo.yaml:9:") and "outside mask 0xff00" in e for e in errs
    ), errs
