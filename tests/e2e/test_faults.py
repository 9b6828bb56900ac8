"""End to end, faults while running: a second daemon is refused and leaves
the first one's rules alone; a flushed or destroyed set comes back with its static
entries and MARK rules; running out of file descriptors is survived; a bad config
on SIGHUP keeps the old one; the kill switch blocks marked traffic while the
tunnel is down instead of leaking it through the WAN."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from e2ehelp import hrneo_rules, in_set, resolve, sentinel, status
from routerops import (
    capture_rule,
    delete_capture_rule,
    flush_set,
    mark_rules,
    wipe_marking_and_set,
)
from topology import BACKENDS, DNS6, SET4, SET6, WEB4, WEB6, Topology, wait_for

pytestmark = pytest.mark.e2e

STATIC4, STATIC6 = "203.0.113.100", "2001:db8:100::100"


def _require_e2e(backend: str) -> None:
    require(os.geteuid() == 0, "needs root")
    tools = ("ipset", "iptables", "ip6tables") if backend == "ipset" else ("nft",)
    for tool in ("ip", "conntrack", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")


@pytest.fixture(scope="module", params=BACKENDS)
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """hrneo with static entries and a 1 s periodic check, once per backend."""
    _require_e2e(request.param)
    t = Topology(request.param)
    try:
        t.dns.set("www.example.org", "A", "203.0.113.21")
        t.dns.set("www.example.org", "AAAA", "2001:db8:100::21")
        t.write_config(
            domains=["example.org"], list_lines=[], static=[STATIC4, STATIC6], recheck_interval=1
        )
        t.start_daemon()
        yield t
    finally:
        t.close()


@pytest.fixture(autouse=True)
def _daemon_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "topo" in request.fixturenames:
        t: Topology = request.getfixturevalue("topo")
        assert t.daemon_alive(), f"the daemon died:\n{t.log()}"


def _works(t: Topology, label: str) -> None:
    """The daemon still answers its socket and still adds answers."""
    assert t.daemon is not None and status(t)["pid"] == t.daemon.pid
    sentinel(t, label)


# ---------------------------------------------------------------- a second daemon


@pytest.mark.parametrize("variant", ["same config", "same group", "same socket"])
def test_second_daemon_is_refused_and_touches_nothing(topo: Topology, variant: str) -> None:
    before = hrneo_rules(topo)
    capture, mark = topo.installed_markers()[:2]
    assert any(capture in r for r in before) and any(mark in r for r in before), before
    text = topo.config.read_text()
    if variant == "same group":
        text = text.replace(str(topo.control), str(topo.tmp / "other.sock"))
    elif variant == "same socket":
        text = text.replace("nflog_group: 100", "nflog_group: 101")
    second = topo.tmp / f"second-{variant.replace(' ', '-')}.yaml"
    second.write_text(text)
    log = topo.tmp / f"second-{variant.replace(' ', '-')}.log"
    proc = topo.spawn(second, log)
    try:
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert rc == 1, out
    assert "another hrneo daemon" in out and f"pid {topo.daemon.pid if topo.daemon else 0}" in out
    assert hrneo_rules(topo) == before, out  # not one rule of the first removed or added
    assert topo.control.exists() and not (topo.tmp / "other.sock").exists()
    _works(topo, f"second{variant.rsplit(maxsplit=1)[-1]}")


# ---------------------------------------------------------------- sets


def test_flushed_set_gets_its_statics_back(topo: Topology) -> None:
    assert in_set(topo, STATIC4) and in_set(topo, STATIC6)
    seen = len(topo.log())
    flush_set(topo, SET4)
    flush_set(topo, SET6)
    # the periodic check (1 s here) puts them back, without a SIGHUP; its log
    # line proves they were gone and it was the daemon that put them back
    assert in_set(topo, STATIC4, timeout=5) and in_set(topo, STATIC6, timeout=5), topo.log()

    def restored() -> bool:
        later = topo.log()[seen:]
        # ipset names the set; nftables its table too ("inet hrneo hr_e2e")
        return all(f"{name} (1 new)" in later for name in (SET4, SET6))

    assert wait_for(restored, timeout=5), topo.log()[seen:]
    assert topo.members(SET4)[STATIC4] in (None, 0)  # static: never expires


def test_destroyed_set_comes_back_with_its_mark_rules(topo: Topology) -> None:
    # as firmware does: its mangle chains rewritten (our MARK rules gone), then the set
    wipe_marking_and_set(topo, SET4)
    assert not topo.set_exists(SET4)

    def back() -> bool:
        return mark_rules(topo, SET4) == 2 and STATIC4 in topo.members(SET4)

    assert wait_for(back, timeout=8), topo.log()
    # and they work: a watched address goes to the set and out through the vpn host
    topo.dns.set("dest.example.org", "A", WEB4[2])
    assert resolve(topo, "dest.example.org") == [WEB4[2]]
    assert in_set(topo, WEB4[2])
    assert _reach(topo, WEB4[2]) == "vpn"


# ---------------------------------------------------------------- file descriptors


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _hold(path: Path, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        with contextlib.suppress(OSError):
            s.connect(str(path))
        held.append(s)
    return held


def test_many_held_connections_and_too_few_descriptors(topo: Topology) -> None:
    assert topo.daemon is not None
    pid = topo.daemon.pid
    base = _fds(pid)
    held = _hold(topo.control, 80)
    try:
        time.sleep(0.5)
        assert _fds(pid) <= base + 32 + 2, (_fds(pid), base)  # the cap, not 80
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: _fds(pid) <= base + 2, timeout=5), (_fds(pid), base)

    # now a low limit: a few descriptors to spare, all taken by held clients
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (base + 6, hard))
    held = _hold(topo.control, 40)
    try:
        time.sleep(0.5)
        delete_capture_rule(topo, "udp")
        topo.daemon.send_signal(signal.SIGUSR1)  # a check: iptables/nft cannot even start
        topo.daemon.send_signal(signal.SIGHUP)  # a reload: the config cannot be opened
        time.sleep(2.5)
        assert topo.daemon_alive(), topo.log()
    finally:
        for s in held:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    log = topo.log()
    assert "Too many open files" in log, log[-3000:]
    # descriptors back: the vanished rule returns at the next check, answers still count
    assert wait_for(lambda: capture_rule(topo, "udp") != "", timeout=8), topo.log()
    _works(topo, "fds")


# ---------------------------------------------------------------- reload


@pytest.mark.parametrize("bad", ["nested", "python tag", "fifo", "dev zero", "nan"])
def test_sighup_with_a_bad_config_keeps_the_old_one(topo: Topology, bad: str) -> None:
    good = topo.config.read_text()
    fifo = topo.tmp / "list.fifo"
    if bad == "fifo" and not fifo.exists():
        os.mkfifo(fifo)
    text = {
        "nested": good + "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "python tag": good.replace("nflog_group: 100",
                                   "nflog_group: !!python/object/apply:os.getpid []"),
        "fifo": good.replace(f"domain_files: [{topo.list_file}]", f"domain_files: [{fifo}]"),
        "dev zero": good.replace(f"domain_files: [{topo.list_file}]", "domain_files: [/dev/zero]"),
        "nan": good.replace("recheck_interval: 1", "recheck_interval: .nan"),
    }[bad]  # fmt: skip
    assert text != good
    try:
        topo.config.write_text(text)
        t0 = time.time()
        assert topo.daemon is not None
        topo.daemon.send_signal(signal.SIGHUP)

        def rejected() -> bool:
            rl = status(topo)["last_reload"]
            return bool(rl and rl["time"] >= t0 - 1 and not rl["ok"])

        assert wait_for(rejected, timeout=10), topo.log()
        assert f"{topo.config}:" in status(topo)["last_reload"]["message"]
    finally:
        topo.config.write_text(good)
    _works(topo, f"reload{len(bad)}")


# ---------------------------------------------------------------- kill switch


def _reach(t: Topology, address: str) -> str:
    """'vpn' or 'wan' (who answered), or 'blocked' (no connection)."""
    try:
        conn = t.connect(address, timeout=2)
    except OSError:
        return "blocked"
    try:
        return conn.ask() or "blocked"
    finally:
        conn.close()


@pytest.mark.parametrize("kill_switch", [False, True])
def test_tunnel_down_kill_switch_blocks_instead_of_leaking(
    topo: Topology, kill_switch: bool
) -> None:
    assert topo.stop_daemon(signal.SIGTERM) == 0, topo.log()
    topo.write_config(domains=["example.org"], list_lines=[], static=[STATIC4, STATIC6],
                      recheck_interval=1, kill_switch=kill_switch)  # fmt: skip
    topo.start_daemon()
    # keep r2's IPv6 addresses across down/up, as a tunnel's configuration would
    topo.router.sh("sysctl -qw net.ipv6.conf.r2.keep_addr_on_down=1")
    topo.dns.set("ks.example.org", "A", WEB4[3])
    topo.dns.set("ks.example.org", "AAAA", WEB6[3])
    assert resolve(topo, "ks.example.org") == [WEB4[3]]
    assert resolve(topo, "ks.example.org", "AAAA", server=DNS6) == [WEB6[3]]
    assert in_set(topo, WEB4[3]) and in_set(topo, WEB6[3])
    assert _reach(topo, WEB4[3]) == "vpn" and _reach(topo, WEB6[3]) == "vpn"
    topo.router.sh("ip link set r2 down")
    try:
        time.sleep(1.5)  # a check runs meanwhile: it cannot put the route back
        got = (_reach(topo, WEB4[3]), _reach(topo, WEB6[3]))
        if kill_switch:
            assert got == ("blocked", "blocked"), (got, topo.firewall_dump())
        else:
            assert "wan" in got, got  # the leak the kill switch exists for
    finally:
        topo.router.sh("ip link set r2 up")
    # the tunnel is back: the check re-installs the table's route
    assert wait_for(lambda: _reach(topo, WEB4[3]) == "vpn", timeout=10), topo.firewall_dump()
    assert wait_for(lambda: _reach(topo, WEB6[3]) == "vpn", timeout=10), topo.firewall_dump()
    _works(topo, f"ks{int(kill_switch)}")
