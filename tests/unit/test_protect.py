"""protected_networks(): what hrneo must never add, from canned `ip` output (no root)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

from hrneo.config import Config, load_config
from hrneo.protect import FIXED_NETWORKS, protected_networks

ADDR_JSON = [
    {"ifname": "lo", "addr_info": [
        {"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
        {"family": "inet6", "local": "::1", "prefixlen": 128}]},
    {"ifname": "br0", "address": "02:00:00:00:00:01", "addr_info": [
        {"family": "inet", "local": "192.0.2.1", "prefixlen": 26, "broadcast": "192.0.2.63"},
        {"family": "inet6", "local": "2001:db8:1::1", "prefixlen": 64},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
    {"ifname": "tun0", "addr_info": [
        {"family": "inet", "local": "198.51.100.2", "address": "198.51.100.1", "prefixlen": 32}]},
    {"ifname": "odd", "addr_info": [{"family": "inet"}, "junk", {"local": "not-an-ip"}]},
]  # fmt: skip
ROUTES4 = [
    {"dst": "default", "gateway": "203.0.113.1", "dev": "eth0"},
    {"dst": "192.0.2.0/26", "dev": "br0"},
    {"dst": "default", "dev": "eth1", "table": "7",
     "nexthops": [{"gateway": "203.0.113.9"}, {"dev": "x"}]},
]  # fmt: skip
ROUTES6 = [{"dst": "default", "gateway": "fe80::9", "dev": "eth0"}]

CONFIG = """\
trusted_resolvers: [203.0.113.53, "2001:db8:53::/48"]
policies:
  - name: vpn1
    ipset: s4
    ipset6: s6
    domains: [example.org]
    route: {interface: eth9, gateway: 192.0.2.200, gateway6: "2001:db8:9::1", table: 7, mark: 7}
"""


class FakeIp:
    """Answers `ip` commands; with json=False, `-j` fails as busybox's does."""

    def __init__(self, json_ok: bool = True, fail: bool = False) -> None:
        self.json_ok = json_ok
        self.fail = fail
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if self.fail:
            return subprocess.CompletedProcess(argv, 127, "", "ip: not found")
        if "-j" in argv:
            if not self.json_ok:
                return subprocess.CompletedProcess(argv, 1, "", 'Option "-j" is unknown')
            data = ADDR_JSON if "addr" in argv else ROUTES6 if "-6" in argv else ROUTES4
            return subprocess.CompletedProcess(argv, 0, json.dumps(data), "")
        if "addr" in argv:
            out = (
                "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
                "3: br0    inet 192.0.2.1/26 brd 192.0.2.63 scope global br0\\  x\n"
                "3: br0    inet6 2001:db8:1::1/64 scope global \\       valid_lft forever\n"
                "5: tun0    inet 198.51.100.2 peer 198.51.100.1/32 scope global tun0\n"
            )
        elif "-6" in argv:
            out = "default via fe80::9 dev eth0 metric 1024\n"
        else:
            out = (
                "default via 203.0.113.1 dev eth0\n192.0.2.0/26 dev br0 scope link\n"
                "default table 7\n\tnexthop via 203.0.113.9 dev eth1 weight 1\n"
            )
        return subprocess.CompletedProcess(argv, 0, out, "")


def load(tmp_path: Path) -> Config:
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    cfg, _ = load_config(str(path))
    return cfg


def resolv(tmp_path: Path) -> list[str]:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nsearch lan\nnameserver 198.51.100.53\nnameserver fe80::53%br0\n"
        "nameserver not-an-address\noptions edns0\n"
    )
    return [str(conf), str(tmp_path / "missing.conf")]


EXPECTED = [
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "192.0.2.0/26", "192.0.2.200/32",
    "198.51.100.1/32", "198.51.100.2/32", "198.51.100.53/32", "203.0.113.1/32",
    "203.0.113.9/32", "203.0.113.53/32", "224.0.0.0/4", "255.255.255.255/32",
    "::/127", "::ffff:0:0/96", "2001:db8:1::/64", "2001:db8:9::1/128",
    "2001:db8:53::/48", "fe80::/10", "ff00::/8",
]  # fmt: skip


def test_everything_the_router_needs(tmp_path: Path) -> None:
    fake = FakeIp()
    got = protected_networks(load(tmp_path), runner=fake, resolv_confs=resolv(tmp_path))
    assert got == EXPECTED
    # only argv lists, the configured program, with the namespace prefix when given
    protected_networks(load(tmp_path), runner=fake, prefix=["ip", "netns", "exec", "n"])
    assert fake.calls[-1][:5] == ["ip", "netns", "exec", "n", "ip"]


def test_text_output_when_ip_has_no_json(tmp_path: Path) -> None:
    got = protected_networks(load(tmp_path), runner=FakeIp(json_ok=False),
                             resolv_confs=resolv(tmp_path))  # fmt: skip
    assert got == EXPECTED


def test_without_ip_the_fixed_and_configured_ones_remain(tmp_path: Path) -> None:
    got = protected_networks(load(tmp_path), runner=FakeIp(fail=True), resolv_confs=())
    fixed = {n for n, _ in FIXED_NETWORKS} - {"::/128", "::1/128"}
    assert fixed | {"::/127"} <= set(got)  # :: and ::1 side by side collapse
    assert {"203.0.113.53/32", "2001:db8:53::/48", "192.0.2.200/32"} <= set(got)
    assert "192.0.2.0/26" not in got


def test_collapsed_and_ordered(tmp_path: Path) -> None:
    got = protected_networks(load(tmp_path), runner=FakeIp(), resolv_confs=())
    v4 = [n for n in got if ":" not in n]
    assert got[: len(v4)] == v4  # IPv4 first
    import ipaddress

    nets = [ipaddress.ip_network(n) for n in got]
    for a in nets:
        for b in nets:
            assert a == b or a.version != b.version or not a.subnet_of(b), (a, b)  # type: ignore[arg-type]
