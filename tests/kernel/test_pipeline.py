"""The core's Plan and Pipeline against the real kernel: DNS answers sent from
a "server" namespace are copied by NFLOG in the "client" namespace, where the
pipeline puts their addresses into real ipsets and deletes the conntrack
entries of the new ones. The `ipset` and `conntrack` programs are the witnesses."""

from __future__ import annotations

import re
import shutil
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
from conftest import require, require_kernel_tools
from hrneo import Pipeline, Plan
from hrneo.config import Config, load_config
from hrneo.status import FlusherStats
from hrneo.testing.dnswire import message
from hrneo.testing.netns import Netns, link

pytestmark = pytest.mark.kernel

GROUP = 101
SRV4, CLI4 = "192.0.2.1", "192.0.2.2"
SRV6, CLI6 = "2001:db8::1", "2001:db8::2"

CONFIG = """\
nflog_group: {group}
policies:
  - name: vpn
    ipset: hr_vpn
    ipset6: hr_vpn6
    timeout: 600
    domains: [example.org]
    static: [198.51.100.0/28]
  - name: keep
    ipset: hr_keep
    reconnect: false
    timeout: 0
    domains: [example.net]
"""


class Rig(NamedTuple):
    srv: Netns
    cli: Netns
    tmp: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    require_kernel_tools("iptables", "ip6tables", "ipset", "conntrack")
    srv, cli = Netns("-srv"), Netns("-cli")
    try:
        link(srv, cli, "hrp-s", "hrp-c", [f"{SRV4}/24", f"{SRV6}/64"], [f"{CLI4}/24", f"{CLI6}/64"])
        for tool in ("iptables", "ip6tables"):
            cli.sh(f"{tool} -w -A INPUT -p udp --sport 53 -j NFLOG --nflog-group {GROUP}")
            # conntrack only tracks where some rule needs it
            cli.sh(f"{tool} -w -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT")
        yield Rig(srv, cli, tmp_path)
    finally:
        srv.delete()
        cli.delete()


def config(rig: Rig, text: str = CONFIG) -> Config:
    path = rig.tmp / "hrneo.yaml"
    path.write_text(textwrap.dedent(text).format(group=GROUP))
    return load_config(str(path))[0]


def open_pipeline(rig: Rig, cfg: Config, conntrack: str = "events") -> Pipeline:
    with rig.cli.enter():
        plan = Plan(cfg.watchlist, cfg.policies)
        plan.prepare()
        return Pipeline(plan, nflog_group=GROUP, conntrack=conntrack)  # type: ignore[arg-type]


def send(rig: Rig, payloads: list[bytes], dst: str = CLI4) -> None:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with rig.srv.enter():
        s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 53))
        for p in payloads:
            s.sendto(p, (dst, 40053))
    finally:
        s.close()


def members(rig: Rig, name: str) -> dict[str, int | None]:
    """The set's members as the ipset program sees them ({} while it does not exist)."""
    out = rig.cli.sh(f"ipset list -o save {name}", check=False).stdout
    got: dict[str, int | None] = {}
    for line in out.splitlines():
        m = re.match(rf"add {re.escape(name)} (\S+)(?: timeout (\d+))?", line)
        if m:
            got[m.group(1)] = int(m.group(2)) if m.group(2) else None
    return got


def run_until(p: Pipeline, cond: Callable[[], bool], rounds: int = 40) -> bool:
    """Let the pipeline run (0.1 s a turn, bounded) until `cond` holds."""
    for _ in range(rounds):
        if cond():
            return True
        p.run(0.1)
    return cond()


def answer(txid: int, qname: str, *ips: str) -> bytes:
    rr = [(qname, "AAAA" if ":" in ip else "A", 60, ip) for ip in ips]
    return message(txid, qname, "AAAA" if ":" in ips[0] else "A", rr)


def test_answers_land_in_their_policies_sets(rig: Rig) -> None:
    p = open_pipeline(rig, config(rig))
    with p:
        assert members(rig, "hr_vpn") == {"198.51.100.0/28": 0}, "static, permanent"
        send(rig, [
            answer(1, "www.example.org", "192.0.2.10", "192.0.2.11"),
            answer(2, "www.example.org", "2001:db8::10"),
            answer(3, "a.example.net", "203.0.113.5"),
            answer(4, "badexample.org", "203.0.113.6"),
        ])  # fmt: skip
        assert run_until(p, lambda: "203.0.113.5" in members(rig, "hr_keep"))
        assert run_until(p, lambda: "2001:db8::10" in members(rig, "hr_vpn6"))
        vpn = members(rig, "hr_vpn")
        assert {"192.0.2.10", "192.0.2.11"} <= set(vpn)
        assert 590 <= (vpn["192.0.2.10"] or 0) <= 600, "learned entries get the policy's timeout"
        assert "203.0.113.6" not in vpn and "203.0.113.6" not in members(rig, "hr_keep")
        st = p.stats()
        assert st["policies"]["vpn"]["new"] == 3 and st["policies"]["keep"]["new"] == 1
        assert st["unwatched"] == 1 and st["answers"] == 4
        assert st["capture"]["packets"] == 4


def test_present_addresses_are_refreshed_not_new(rig: Rig) -> None:
    p = open_pipeline(rig, config(rig))
    with p:
        rig.cli.sh("ipset add hr_vpn 192.0.2.20 timeout 5")
        send(rig, [answer(1, "x.example.org", "192.0.2.20", "192.0.2.21")])
        assert run_until(p, lambda: "192.0.2.21" in members(rig, "hr_vpn"))
        assert (members(rig, "hr_vpn")["192.0.2.20"] or 0) > 500, "timeout refreshed"
        c = p.stats()["policies"]["vpn"]
        assert (c["added"], c["new"], c["refreshed"]) == (2, 1, 1)


def test_new_address_gets_its_connections_flushed_present_one_does_not(rig: Rig) -> None:
    cfg = config(rig)
    p = open_pipeline(rig, cfg)
    with p:
        rig.cli.sh("ipset add hr_vpn 192.0.2.31")
        # Connections to both addresses exist before the answer.
        with rig.cli.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for port in (7001, 7002):
                s.sendto(b"x", ("192.0.2.30", port))
            s.sendto(b"x", ("192.0.2.31", 7003))

            def entries(addr: str) -> int:
                out = rig.cli.sh(f"conntrack -L -d {addr}", check=False)
                return len([line for line in out.stdout.splitlines() if "dst=" in line])

            assert entries("192.0.2.30") == 2 and entries("192.0.2.31") == 1
            send(rig, [answer(1, "c.example.org", "192.0.2.30", "192.0.2.31")])
            assert run_until(p, lambda: "192.0.2.30" in members(rig, "hr_vpn"))
            assert p.wait_flushed(5.0)
            assert entries("192.0.2.30") == 0, "new to the set: flushed"
            assert entries("192.0.2.31") == 1, "already in the set: left alone"
            st = p.stats()
            ct = st["conntrack"]
            assert ct is not None and ct["tracking"] is True
            assert ct["flushed"] == 2 and ct["race_misses"] == 1
            assert ct["flusher"].keys() == FlusherStats.__required_keys__  # the stub's type
            assert st["policies"]["vpn"]["flushed"] == 2
        finally:
            s.close()


def test_destroyed_set_is_recreated_on_the_hot_path_and_by_prepare(rig: Rig) -> None:
    p = open_pipeline(rig, config(rig))
    with p:
        rig.cli.sh("ipset destroy hr_vpn")
        send(rig, [answer(1, "y.example.org", "192.0.2.40")])
        assert run_until(p, lambda: "192.0.2.40" in members(rig, "hr_vpn"))
        assert "198.51.100.0/28" in members(rig, "hr_vpn"), "statics back with the set"
        assert p.stats()["sets_recreated"] == 1
        notes = [line for _level, line in p.take_notes()]
        assert any("preparing it again" in n for n in notes), notes
        # The periodic check does the same without an answer: flushed statics come back.
        rig.cli.sh("ipset flush hr_vpn")
        rig.cli.sh("ipset destroy hr_keep")
        with rig.cli.enter():
            p.prepare()
        assert "198.51.100.0/28" in members(rig, "hr_vpn")
        assert members(rig, "hr_keep") == {}


def test_swapped_plan_routes_by_the_new_config(rig: Rig) -> None:
    cfg = config(rig)
    p = open_pipeline(rig, cfg)
    with p:
        send(rig, [answer(1, "a.example.org", "192.0.2.50")])
        assert run_until(p, lambda: "192.0.2.50" in members(rig, "hr_vpn"))
        new_cfg = config(rig, CONFIG.replace("domains: [example.net]", "domains: [example.com]"))
        with rig.cli.enter():
            plan = Plan(new_cfg.watchlist, new_cfg.policies)
            plan.prepare()
        p.swap_plan(plan)
        with pytest.raises(ValueError, match="Plan is closed"):
            p.swap_plan(plan)  # a plan is taken over once
        send(
            rig,
            [
                answer(2, "a.example.net", "203.0.113.60"),
                answer(3, "b.example.com", "203.0.113.61"),
            ],
        )
        assert run_until(p, lambda: "203.0.113.61" in members(rig, "hr_keep"))
        assert "203.0.113.60" not in members(rig, "hr_keep")
        assert p.stats()["policies"]["vpn"]["new"] == 1, "counters kept by name"


def test_verbose_notes_and_run_wakes_on_the_wake_fd(rig: Rig) -> None:
    import os

    p = open_pipeline(rig, config(rig), conntrack="off")
    with p:
        p.set_verbose(True)
        send(rig, [answer(1, "v.example.org", "192.0.2.70")])
        assert run_until(p, lambda: "192.0.2.70" in members(rig, "hr_vpn"))
        assert (10, "vpn +192.0.2.70 v.example.org") in p.take_notes()
        assert p.stats()["conntrack"] is None
        r, w = os.pipe()
        try:
            os.write(w, b"x")
            t0 = time.monotonic()
            assert p.run(5.0, r) == "wake"
            assert time.monotonic() - t0 < 1.0
            assert p.run(0.05, None) == "timeout"
        finally:
            os.close(r)
            os.close(w)
    with pytest.raises(ValueError, match="Pipeline is closed"):
        p.stats()


# ---------------------------------------------------------------- backend nftables


def nft_members(rig: Rig, name: str) -> list[str]:
    """Members of a set of inet hrneo, as `nft` lists them ([] while it does not exist)."""
    out = rig.cli.sh(f"nft list set inet hrneo {name}", check=False).stdout
    m = re.search(r"elements = \{(.*?)\}", out, re.DOTALL)
    return [item.split()[0] for item in m.group(1).split(",")] if m else []


def open_nft_pipeline(rig: Rig, cfg: Config) -> tuple[Pipeline, list[str]]:
    with rig.cli.enter():
        plan = Plan(cfg.watchlist, cfg.policies, backend="nftables")
        assert plan.backend == "nftables"
        notes = plan.prepare()
        return Pipeline(plan, nflog_group=GROUP, conntrack="events"), notes


def test_nftables_backend_sets_statics_refresh_and_flush(rig: Rig) -> None:
    require(shutil.which("nft") is not None, "needs the `nft` program")
    p, notes = open_nft_pipeline(rig, config(rig))
    with p:
        assert any("created set inet hrneo hr_vpn (ipv4_addr" in n for n in notes), notes
        assert nft_members(rig, "hr_vpn") == ["198.51.100.0/28"], "static, permanent"
        rig.cli.sh("nft add element inet hrneo hr_vpn { 192.0.2.31 timeout 10s }")
        with rig.cli.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"x", ("192.0.2.30", 7001))
            send(rig, [
                answer(1, "www.example.org", "192.0.2.30", "192.0.2.31", "198.51.100.3"),
                answer(2, "www.example.org", "2001:db8::10"),
            ])  # fmt: skip
            assert run_until(p, lambda: "2001:db8::10" in nft_members(rig, "hr_vpn6"))
            assert run_until(p, lambda: "192.0.2.30" in nft_members(rig, "hr_vpn"))
            assert p.wait_flushed(5.0)
        finally:
            s.close()
        c = p.stats()["policies"]["vpn"]
        # .31 was there (refreshed), .3 is inside the static /28: neither is new.
        assert (c["added"], c["new"], c["refreshed"]) == (4, 2, 2), c
        assert c["flushed"] == 1
        listing = rig.cli.sh("nft list set inet hrneo hr_vpn").stdout
        m = re.search(r"192\.0\.2\.31 timeout (\S+) expires (\d+)m", listing)
        assert m and int(m.group(2)) >= 9, listing  # 10 s became the policy's 600 s
        # The periodic check after `nft flush set`: statics come back.
        rig.cli.sh("nft flush set inet hrneo hr_vpn")
        with rig.cli.enter():
            p.prepare()
        assert nft_members(rig, "hr_vpn") == ["198.51.100.0/28"]


def test_nftables_static_network_replaces_the_addresses_it_holds(rig: Rig) -> None:
    require(shutil.which("nft") is not None, "needs the `nft` program")
    p, _ = open_nft_pipeline(rig, config(rig))
    with p:
        send(rig, [answer(1, "a.example.org", "203.0.113.5", "203.0.113.6")])
        assert run_until(p, lambda: "203.0.113.6" in nft_members(rig, "hr_vpn"))
    # A reload adds a static network over them: the kernel refuses overlapping
    # intervals, so the network takes their place.
    cfg = config(rig, CONFIG.replace("static: [198.51.100.0/28]", "static: [203.0.113.0/24]"))
    with rig.cli.enter():
        plan = Plan(cfg.watchlist, cfg.policies, backend="nftables")
        notes = plan.prepare()
    assert any("2 entries of inet hrneo hr_vpn now inside static networks" in n for n in notes)
    assert sorted(nft_members(rig, "hr_vpn")) == ["198.51.100.0/28", "203.0.113.0/24"]
