"""Forged answers and faults on a real kernel, inside namespaces: verified capture
rules, the kill switch route, the protected networks of a namespace, instance
claims per namespace."""

from __future__ import annotations

import ipaddress
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_kernel_tools
from hrneo.config import Config, load_config
from hrneo.errors import DaemonError
from hrneo.firewall import KILL_SWITCH_METRIC, BlockRoute, Firewall, TableRoute
from hrneo.instance import InstanceLock
from hrneo.protect import protected_networks
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

CONFIG = """\
nflog_group: 78
trusted_resolvers: [203.0.113.53]
firewall:
  dns_chains: [OUTPUT, FORWARD]
  ipv6: true
policies:
  - name: vpn1
    ipset: hrk_vpn1
    ipset6: hrk_vpn1_v6
    domains: [example.org]
    route:
      interface: tun9
      gateway: 192.0.2.1
      gateway6: 2001:db8::1
      table: 1001
      mark: 0x1001
      kill_switch: true
"""


@pytest.fixture
def setup(netns: Netns, tmp_path: Path) -> tuple[Netns, Config, Callable[[], Firewall]]:
    require_kernel_tools("iptables", "ip6tables", "ipset")
    ns = netns
    for cmd in (
        "ipset create hrk_vpn1 hash:net timeout 60",
        "ipset create hrk_vpn1_v6 hash:net family inet6 timeout 60",
        "ip link add tun9 type veth peer name tun9p",
        "ip link set tun9p up",
        "ip addr add 192.0.2.2/24 dev tun9",
        "ip addr add 2001:db8::2/64 dev tun9 nodad",
        "ip link set tun9 up",
    ):
        ns.sh(cmd)
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    cfg, _ = load_config(str(path))

    def make() -> Firewall:
        return Firewall(cfg.firewall, prefix=["ip", "netns", "exec", ns.name])

    return ns, cfg, make


def test_capture_rules_are_verified_and_cleaned_as_stale(
    setup: tuple[Netns, Config, Callable[[], Firewall]],
) -> None:
    ns, cfg, make = setup
    fw = make()
    fw.start(cfg)
    assert fw.unverified == set()  # this kernel has the conntrack match
    for prog in ("iptables", "ip6tables"):
        lines = [x for x in ns.sh([prog, "-w", "-S"]).stdout.splitlines() if "hrneo:dns" in x]
        assert len(lines) == 4, lines
        assert all("--ctstate ESTABLISHED --ctdir REPLY" in x for x in lines), lines
        # first in their chains
        for chain in ("OUTPUT", "FORWARD"):
            rules = ns.sh([prog, "-w", "-S", chain]).stdout.splitlines()[1:]
            assert all("hrneo:dns" in r for r in rules[:2]), rules
    # a crash leaves them; the next start (alone in the namespace) removes them
    fw2 = make()
    fw2.start(cfg)
    assert len([x for x in ns.sh("iptables -w -S").stdout.splitlines() if "hrneo:dns" in x]) == 4
    fw2.stop()
    assert "hrneo:" not in ns.sh("iptables -w -S").stdout + ns.sh("ip6tables -w -S").stdout


def test_kill_switch_route_blocks_while_the_interface_is_gone(
    setup: tuple[Netns, Config, Callable[[], Firewall]],
) -> None:
    ns, cfg, make = setup
    fw = make()
    fw.start(cfg)
    try:
        for fam in (4, 6):
            routes = ns.sh(f"ip -{fam} route show table 1001").stdout
            assert "unreachable default" in routes and str(KILL_SWITCH_METRIC) in routes, routes
            assert "default via" in routes, routes
        # the tunnel goes away: its route goes with it, the block stays
        ns.sh("ip link del tun9")
        for fam, dst in ((4, "203.0.113.7"), (6, "2001:db8:100::7")):
            got = ns.sh(f"ip -{fam} route get {dst} mark 0x1001", check=False)
            assert got.returncode != 0 or "unreachable" in got.stdout, got.stdout + got.stderr
        assert fw.reconcile() == 0
        assert TableRoute(4, 1001, "tun9", "192.0.2.1") in fw.missing
        assert BlockRoute(4, 1001) not in fw.missing and BlockRoute(6, 1001) not in fw.missing
    finally:
        fw.stop()
    for fam in (4, 6):
        assert ns.sh(f"ip -{fam} route show table 1001").stdout == ""


def test_protected_networks_of_a_namespace(
    setup: tuple[Netns, Config, Callable[[], Firewall]], tmp_path: Path
) -> None:
    ns, cfg, _make = setup
    ns.sh("ip route add default via 192.0.2.254")
    ns.sh("ip route add 203.0.113.64/26 via 198.51.100.99 dev tun9 onlink table 7")
    ns.sh("ip -6 route add default via 2001:db8::fe")
    ns.sh("ip addr add 198.51.100.7 peer 198.51.100.8/32 dev tun9")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 198.51.100.53\n")
    got = protected_networks(cfg, prefix=["ip", "netns", "exec", ns.name],
                             resolv_confs=[str(resolv)])  # fmt: skip
    for want in (
        "192.0.2.0/24",  # connected, with the router's own 192.0.2.2
        "192.0.2.254/32",  # main table gateway
        "192.0.2.1/32",  # the policy's route gateway (its table)
        "198.51.100.7/32",  # a point-to-point address ...
        "198.51.100.8/32",  # ... and its peer
        "198.51.100.53/32",  # resolv.conf
        "203.0.113.53/32",  # trusted_resolvers
        "2001:db8::/64",
        "2001:db8::fe/128",
        "127.0.0.0/8",
        "fe80::/10",
    ):
        net = ipaddress.ip_network(want)
        assert any(
            net.version == g.version and net.subnet_of(g)  # type: ignore[arg-type]
            for g in map(ipaddress.ip_network, got)
        ), (want, got)
    # not inside a connected network: there only as gateways of a table (7)
    assert {"198.51.100.99/32", "198.51.100.7/32", "192.0.2.0/24"} <= set(got), got


def test_claims_are_per_network_namespace(make_netns: Callable[[str], Netns]) -> None:
    a, b = make_netns("a"), make_netns("b")
    prefix = f"hrneo-ktest-{uuid.uuid4().hex[:8]}"
    with a.enter():
        la = InstanceLock(100, None, prefix=prefix)
        la.acquire()
    try:
        with b.enter():
            lb = InstanceLock(100, None, prefix=prefix)
            lb.acquire()  # same group, other namespace: its own NFLOG group
            assert lb.others() == []
            lb.release()
        with a.enter():
            again = InstanceLock(100, None, prefix=prefix)
            with pytest.raises(DaemonError, match="nflog group 100"):
                again.acquire()
            other = InstanceLock(101, None, prefix=prefix)
            other.acquire()
            assert other.others() == [f"{prefix}/nflog/100"]
            other.release()
    finally:
        la.release()
