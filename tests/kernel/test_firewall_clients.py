"""A policy with `clients` on a real kernel, for both backends: a LAN namespace with
two addresses of each family sends to an address of the policy's set through a
router namespace, and only the listed client's packets get the mark. The rules
survive a reconcile, a reload to other clients and a crash; stop leaves nothing.

A counting rule of the test's own, after hrneo's marking in prerouting, counts the
marked packets (`iptables -t mangle -A`, or an nft chain at priority mangle + 10).
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import pytest
from conftest import require, require_kernel_tools
from hrneo import Plan
from hrneo.config import Config, load_config
from hrneo.firewall import Firewall
from hrneo.firewall_nft import NftFirewall
from hrneo.testing.netns import Netns, link

pytestmark = pytest.mark.kernel

LISTED4, OTHER4 = "192.0.2.2", "192.0.2.3"
LISTED6, OTHER6 = "2001:db8:1::2", "2001:db8:1::3"
DST4, DST6 = "203.0.113.10", "2001:db8:100::10"
PORT = 9  # discard: nobody answers, the packets are only counted

CONFIG = """\
backend: {backend}
nflog_group: 77
firewall:
  dns_chains: [FORWARD]
policies:
  - name: vpn1
    ipset: hrt_cl
    ipset6: hrt_cl6
    domains: [example.org]
    static: [{dst4}, "{dst6}"]
    clients: [{clients}]
    route: {{interface: vpn0, table: 1001, mark: 0x1001}}
"""

NFT_COUNT = """\
table inet hrt_count {
    chain pre {
        type filter hook prerouting priority mangle + 10; policy accept;
        udp dport 9 counter comment "all"
        udp dport 9 meta mark 0x1001 counter comment "marked"
    }
}
"""

AnyFirewall = Union[Firewall, NftFirewall]


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll `cond` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class Lab:
    """A router namespace with hrneo's sets and the counting rules, and its LAN."""

    backend: str
    router: Netns
    lan: Netns
    tmp: Path

    def config(self, clients: str) -> Config:
        path = self.tmp / "hrneo.yaml"
        path.write_text(CONFIG.format(backend=self.backend, dst4=DST4, dst6=DST6, clients=clients))
        return load_config(str(path))[0]

    def firewall(self, cfg: Config) -> AnyFirewall:
        prefix = ["ip", "netns", "exec", self.router.name]
        if self.backend == "nftables":
            return NftFirewall(cfg.firewall, prefix=prefix)
        return Firewall(cfg.firewall, prefix=prefix)

    def counted(self, family: int) -> tuple[int, int]:
        """(all, marked) packets to port 9 seen in prerouting so far."""
        if self.backend == "nftables":
            # one pair of counters for both families: the test sends one family at a time
            out = self.router.sh("nft list chain inet hrt_count pre").stdout
            found = {
                tag: int(n)
                for n, tag in re.findall(r'packets (\d+) bytes \d+ comment "(\w+)"', out)
            }
            return found["all"], found["marked"]
        prog = "iptables" if family == 4 else "ip6tables"
        out = self.router.sh(f"{prog} -w -t mangle -nvxL PREROUTING").stdout

        def total(tag: str) -> int:
            return sum(int(line.split()[0]) for line in out.splitlines() if tag in line)

        return total("hrt-all"), total("hrt-marked")

    def send(self, src: str, count: int = 3) -> int:
        """`count` datagrams from `src` in the LAN to the set's address; how many got marked."""
        family = 6 if ":" in src else 4
        all_before, marked_before = self.counted(family)
        with self.lan.enter():
            s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.bind((src, 0))
            for _ in range(count):
                s.sendto(b"x", (DST6 if family == 6 else DST4, PORT))
        # (the first ones wait for neighbour discovery): until all have arrived
        arrived = wait_for(lambda: self.counted(family)[0] - all_before >= count, timeout=5)
        assert arrived, f"the datagrams from {src} never reached the router"
        return self.counted(family)[1] - marked_before

    def hrneo_rules(self) -> list[str]:
        """hrneo's marking rules, as the kernel lists them."""
        if self.backend == "nftables":
            out = self.router.sh("nft -t list table inet hrneo", check=False).stdout
            return [x.strip() for x in out.splitlines() if 'comment "hrneo:vpn1' in x]
        # (iptables-nft quotes the comment, iptables-legacy does not)
        return [
            line.replace('"', "")
            for prog in ("iptables", "ip6tables")
            for line in self.router.sh(f"{prog} -w -t mangle -S").stdout.splitlines()
            if "hrneo:vpn1" in line
        ]


@pytest.fixture(params=["ipset", "nftables"])
def lab(request: pytest.FixtureRequest, make_netns: object, tmp_path: Path) -> Lab:
    backend: str = request.param
    if backend == "ipset":
        require_kernel_tools("iptables", "ip6tables", "ipset")
    else:
        require_kernel_tools()
        require(shutil.which("nft") is not None, "needs the `nft` program")
    router: Netns = make_netns("r")  # type: ignore[operator]
    lan: Netns = make_netns("l")  # type: ignore[operator]
    link(lan, router, "l0", "r0",
         [f"{LISTED4}/24", f"{OTHER4}/24", f"{LISTED6}/64", f"{OTHER6}/64"],
         ["192.0.2.1/24", "2001:db8:1::1/64"])  # fmt: skip
    lan.sh("ip route add default via 192.0.2.1")
    lan.sh("ip -6 route add default via 2001:db8:1::1")
    for cmd in (
        # the policy's interface (a veth pair inside the router stands in for a tunnel)
        "ip link add vpn0 type veth peer name vpn0p",
        "ip link set vpn0p up",
        "ip link set vpn0 up",
    ):
        router.sh(cmd)
    t = Lab(backend, router, lan, tmp_path)
    cfg = t.config(f'{LISTED4}, "{LISTED6}"')
    with router.enter():
        Plan(cfg.watchlist, cfg.policies, backend=backend).prepare()  # the sets, with DST4/6
    if backend == "nftables":
        (tmp_path / "count.nft").write_text(NFT_COUNT)
        router.sh(["nft", "-f", str(tmp_path / "count.nft")])
    else:
        for prog in ("iptables", "ip6tables"):
            for tag, mark in (("hrt-all", []), ("hrt-marked", ["-m", "mark", "--mark", "0x1001"])):
                router.sh([prog, "-w", "-t", "mangle", "-A", "PREROUTING", "-p", "udp",
                           "--dport", str(PORT), *mark,
                           "-m", "comment", "--comment", tag])  # fmt: skip
    return t


def test_only_the_listed_client_is_marked(lab: Lab) -> None:
    cfg = lab.config(f'{LISTED4}, "{LISTED6}"')
    fw = lab.firewall(cfg)
    fw.start(cfg)
    try:
        rules = lab.hrneo_rules()
        if lab.backend == "nftables":
            assert len(rules) == 2, rules
            assert any(r.startswith(f"ip saddr {LISTED4} ip daddr @hrt_cl ") for r in rules), rules
            assert any(r.startswith(f"ip6 saddr {LISTED6} ip6 daddr @hrt_cl6 ") for r in rules)
            chains = lab.router.sh("nft -t list table inet hrneo").stdout
            assert "g77_mark_output" not in chains  # the router's own traffic: not a client
        else:
            tail = "-m comment --comment hrneo:vpn1 -j MARK --set-xmark 0x1001/0xffffffff"
            assert sorted(rules) == [
                f"-A PREROUTING -s {LISTED4}/32 -m set --match-set hrt_cl dst {tail}",
                f"-A PREROUTING -s {LISTED6}/128 -m set --match-set hrt_cl6 dst {tail}",
            ]
        for family, listed, other in ((4, LISTED4, OTHER4), (6, LISTED6, OTHER6)):
            assert lab.send(listed) == 3, f"IPv{family}: the listed client was not marked"
            assert lab.send(other) == 0, f"IPv{family}: another client was marked"
    finally:
        fw.stop()
    assert lab.hrneo_rules() == []


def test_networks_reconcile_reload_and_a_crash(lab: Lab) -> None:
    cfg = lab.config(f'198.51.100.0/25, {LISTED4}, "{LISTED6}"')
    fw = lab.firewall(cfg)
    fw.start(cfg)
    try:
        installed = sorted(lab.hrneo_rules())
        assert len(installed) == (2 if lab.backend == "nftables" else 3), installed
        # a set of several networks, as nft lists it back
        if lab.backend == "nftables":
            assert any(f"ip saddr {{ {LISTED4}, 198.51.100.0/25 }}" in r for r in installed)
        # firmware rewrites the chain: the periodic check puts the rules back
        if lab.backend == "nftables":
            lab.router.sh("nft flush chain inet hrneo g77_mark_prerouting")
        else:
            lab.router.sh("iptables -w -t mangle -D PREROUTING " + installed[0].split(" ", 2)[2])
        assert len(lab.hrneo_rules()) < len(installed)
        assert fw.reconcile() >= 1
        assert sorted(lab.hrneo_rules()) == installed
        assert lab.send(LISTED4) == 3 and lab.send(OTHER4) == 0

        # a reload to the other client: the old rules go, the new ones come
        other = lab.config(f'{OTHER4}, "{OTHER6}"')
        fw.apply(other)
        assert lab.send(LISTED4) == 0 and lab.send(OTHER4) == 3
        assert lab.send(LISTED6) == 0 and lab.send(OTHER6) == 3
    except BaseException:
        fw.stop()
        raise
    # crash: fw never stops; a new run cleans up after it and installs its own
    fw2 = lab.firewall(cfg)
    fw2.start(cfg)
    try:
        assert sorted(lab.hrneo_rules()) == installed
        assert lab.send(LISTED4) == 3 and lab.send(OTHER4) == 0
    finally:
        fw2.stop()
    assert lab.hrneo_rules() == []
