"""A policy's `clients`: the LAN devices its route is for. Good values are
normalized like `static`; bad ones are errors with `file:line` and the value;
what has no effect is a warning with `file:line`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hrneo import cli
from hrneo.config import ConfigError, load_config

ROUTE = "    route: {interface: wg0, table: 1001, mark: 0x1001}\n"


def write(tmp_path: Path, clients: str, *, route: bool = True, extra: str = "") -> str:
    """A one-policy config (IPv4 and IPv6 sets) whose `clients` value starts at line 7."""
    path = tmp_path / "hrneo.yaml"
    text = (
        f"{extra}policies:\n"
        "  - name: vpn1\n"
        "    ipset: hr_a\n"
        "    ipset6: hr_a6\n"
        "    domains: [example.org]\n"
        f"    clients:{clients}\n"
    ) + (ROUTE if route else "")
    path.write_text(textwrap.dedent(text))
    return str(path)


def lines(*items: str) -> str:
    """A block list after `clients:`, one item a line (the first on line 6 + 1)."""
    return "".join(f"\n      - {item}" for item in items)


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return ei.value.errors


def has(found: list[str], path: str, line: int, *needles: str) -> bool:
    return any(m.startswith(f"{path}:{line}:") and all(n in m for n in needles) for m in found)


def test_addresses_and_networks_are_normalized_like_static(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        lines(
            "198.51.100.0/25",
            '"2001:db8:1::/64"',
            "192.0.2.2",
            "192.0.2.3/32",
            '"2001:DB8:2:0:0:0:0:2/128"',
        ),
    )
    cfg, warnings = load_config(path)
    (pol,) = cfg.policies
    assert pol.clients == (
        "198.51.100.0/25",
        "2001:db8:1::/64",
        "192.0.2.2",
        "192.0.2.3",
        "2001:db8:2::2",
    )
    assert pol.clients_of(4) == ("198.51.100.0/25", "192.0.2.2", "192.0.2.3")
    assert pol.clients_of(6) == ("2001:db8:1::/64", "2001:db8:2::2")
    assert warnings == []


def test_flow_list_and_uppercase_ipv6(tmp_path: Path) -> None:
    path = write(tmp_path, ' [198.51.100.0/25, "2001:DB8:1::/64"]')
    cfg, warnings = load_config(path)
    assert cfg.policies[0].clients == ("198.51.100.0/25", "2001:db8:1::/64")
    assert warnings == []


def test_without_clients_the_policy_is_for_every_device(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.yaml"
    path.write_text("policies:\n  - name: p\n    ipset: s\n    domains: [example.org]\n")
    cfg, _ = load_config(str(path))
    assert cfg.policies[0].clients == ()
    assert cfg.policies[0].clients_of(4) == ()


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("bad", "'bad' is not an IPv4/IPv6 address or network"),
        ("192.0.2.300", "'192.0.2.300' is not an IPv4/IPv6 address or network"),
        ("198.51.100.0/33", "'198.51.100.0/33' is not"),
        ('"fe80::1%eth0"', "'fe80::1%eth0': a scope (%interface) cannot be matched"),
        ("42", "42 is not an IPv4/IPv6 address or network"),
        ("true", "True is not an IPv4/IPv6 address or network"),
        ("[192.0.2.2]", "a list or mapping is not an IPv4/IPv6 address or network"),
        ("{a: 1}", "a list or mapping is not"),
        ("!!int zz", "cannot read 'zz' as int"),
    ],
)
def test_bad_values_are_errors_at_their_line(tmp_path: Path, item: str, needle: str) -> None:
    path = write(tmp_path, lines("192.0.2.2", item))
    errs = errors_of(path)
    assert has(errs, path, 8, needle), errs
    assert len(errs) == 1, errs


def test_every_bad_value_is_reported_in_one_run(tmp_path: Path) -> None:
    path = write(tmp_path, lines("nope", "192.0.2.2", "also.nope", '"2001:db8::/129"'))
    errs = errors_of(path)
    assert has(errs, path, 7, "'nope'")
    assert has(errs, path, 9, "'also.nope'")
    assert has(errs, path, 10, "'2001:db8::/129'")
    assert len(errs) == 3, errs


@pytest.mark.parametrize("value", [" []", "", " ~", " null"])
def test_an_empty_list_is_an_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, value)
    errs = errors_of(path)
    assert has(errs, path, 6, "clients of policy 'vpn1' is empty", "leave `clients` out"), errs


@pytest.mark.parametrize("value", [" 192.0.2.2", " {a: 1}"])
def test_not_a_list_is_an_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, value)
    assert has(errors_of(path), path, 6, "clients must be a list")


def test_host_bits_twice_and_overlaps_are_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        lines(
            "198.51.100.5",  # 7: inside the /24 of line 9, dropped there
            "192.0.2.2",  # 8
            "198.51.100.7/24",  # 9: host bits
            "192.0.2.2/32",  # 10: twice
            "198.51.100.128/25",  # 11: inside line 9's network
        ),
    )
    cfg, warnings = load_config(path)
    assert cfg.policies[0].clients == ("192.0.2.2", "198.51.100.0/24")
    assert has(warnings, path, 9, "'198.51.100.7/24' has host bits set: taken as 198.51.100.0/24")
    assert has(warnings, path, 7, "198.51.100.5 is inside 198.51.100.0/24 (line 9)")
    assert has(warnings, path, 10, "192.0.2.2 is listed twice (line 8)")
    assert has(warnings, path, 11, "198.51.100.128/25 is inside 198.51.100.0/24 (line 9)")


def test_link_local_ipv6_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, lines("192.0.2.2", '"fe80::1"'))
    cfg, warnings = load_config(path)
    assert cfg.policies[0].clients == ("192.0.2.2", "fe80::1")
    assert has(warnings, path, 8, "fe80::1 is link-local")


def test_clients_without_route_have_no_effect(tmp_path: Path) -> None:
    path = write(tmp_path, lines("192.0.2.2", '"2001:db8:1::2"'), route=False)
    cfg, warnings = load_config(path)
    assert cfg.policies[0].clients == ("192.0.2.2", "2001:db8:1::2")
    assert has(warnings, path, 6, "clients of policy 'vpn1' has no effect without `route`")
    assert len(warnings) == 1, warnings


@pytest.mark.parametrize(("items", "family"), [(("192.0.2.2",), 6), (('"2001:db8:1::2"',), 4)])
def test_a_family_without_clients_is_marked_for_no_one(
    tmp_path: Path, items: tuple[str, ...], family: int
) -> None:
    path = write(tmp_path, lines(*items))
    _, warnings = load_config(path)
    assert has(warnings, path, 6, f"lists no IPv{family} address", "marked for no device")


@pytest.mark.parametrize("ipv6_off", [False, True])
def test_ipv6_client_without_ipv6_marking_is_left_out(tmp_path: Path, ipv6_off: bool) -> None:
    path = tmp_path / "hrneo.yaml"
    sets = "    ipset: hr_a\n" + ("    ipset6: hr_a6\n" if ipv6_off else "")
    path.write_text(
        ("firewall: {ipv6: false}\n" if ipv6_off else "")
        + f"policies:\n  - name: vpn1\n{sets}    domains: [example.org]\n"
        + '    clients:\n      - 192.0.2.2\n      - "2001:db8:1::2"\n'
        + ROUTE
    )
    cfg, warnings = load_config(str(path))
    line = 9 if ipv6_off else 7
    assert cfg.policies[0].clients == ("192.0.2.2",)
    assert has(warnings, str(path), line, "'2001:db8:1::2' is IPv6 but the policy marks no IPv6")
    assert not any("lists no IPv6" in w for w in warnings), warnings


def test_foreign_nft_set_says_clients_are_yours_there(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.yaml"
    path.write_text(
        "backend: nftables\npolicies:\n  - name: vpn1\n"
        '    nftset: "4#inet#fw4#vpn4"\n    domains: [example.org]\n'
        "    clients: [192.0.2.2]\n" + ROUTE
    )
    _, warnings = load_config(str(path))
    assert has(warnings, str(path), 7, "inet fw4 vpn4", "for the `clients` too"), warnings


def test_check_names_the_clients(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, ' [192.0.2.2/32, "2001:db8:1::/64"]')
    assert cli.main(["check", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "policy vpn1: routed for clients 192.0.2.2, 2001:db8:1::/64 only" in out
