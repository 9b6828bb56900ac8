"""End to end, learned addresses across a reboot: the daemon writes its state file
at SIGTERM; the sets are destroyed (what a reboot does to them); the daemon started
again puts the addresses back with the time they had left, the static entries
come from the config, and an address whose short timeout ran out while the daemon
was stopped stays out. A corrupt state file is logged and never stops a start."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator

import pytest
from conftest import require
from e2ehelp import resolve
from topology import BACKENDS, SET4, SET6, Topology, wait_for

pytestmark = pytest.mark.e2e

SHORT = "hr_short"  # a second policy's set, with a timeout of a few seconds
SHORT_TIMEOUT = 4
STATIC = "192.0.2.224/27"
ZONE = {
    ("www.example.org", "A"): ["203.0.113.21"],
    ("www.example.org", "AAAA"): ["2001:db8:100::21"],
    ("brief.example.com", "A"): ["203.0.113.44"],
}


def set_spec(t: Topology, name: str) -> str:
    return f"inet#hrneo#{name}" if t.backend == "nftables" else name


def in_set(t: Topology, name: str, addr: str) -> bool:
    """Wait (bounded) until `addr` is in set `name`."""
    return bool(wait_for(lambda: addr in t.members(name), timeout=5))


def destroy_sets(t: Topology) -> None:
    """What a reboot does: every set gone."""
    for name in (SET4, SET6, SHORT):
        if t.backend == "nftables":
            t.router.sh(f"nft delete set inet hrneo {name}")
        else:
            t.router.sh(f"ipset destroy {name}")
    assert not t.set_exists(SET4)


@pytest.fixture(scope="module", params=BACKENDS)
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    require(os.geteuid() == 0, "needs root")
    tools = ("ipset", "iptables", "ip6tables") if request.param == "ipset" else ("nft",)
    for tool in ("ip", "conntrack", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")
    t = Topology(request.param)
    try:
        for (name, rtype), data in ZONE.items():
            t.dns.set(name, rtype, *data)
        cfg = t.write_config(domains=["example.org"], list_lines=[], static=[STATIC])
        # The policies list ends the file: a second policy with a short timeout.
        cfg.write_text(
            cfg.read_text() + f"  - name: brief\n    ipset: {SHORT}\n    timeout: {SHORT_TIMEOUT}\n"
            "    reconnect: false\n    domains: [brief.example.com]\n"
        )
        t.start_daemon()
        yield t
    finally:
        t.close()


def test_addresses_survive_a_reboot(topo: Topology) -> None:
    t = topo
    assert resolve(t, "www.example.org") == ["203.0.113.21"]
    assert resolve(t, "www.example.org", "AAAA") == ["2001:db8:100::21"]
    assert resolve(t, "brief.example.com") == ["203.0.113.44"]
    for name, addr in ((SET4, "203.0.113.21"), (SET6, "2001:db8:100::21"), (SHORT, "203.0.113.44")):
        assert in_set(t, name, addr), (name, t.log())
    time.sleep(2)  # some of the countdown runs before the stop
    before = t.members(SET4)
    before6 = t.members(SET6)
    measured = time.monotonic()

    assert t.stop_daemon() == 0, t.log()
    state = json.loads((t.tmp / "state.json").read_text())
    assert state["format"] == "hrneo-state" and state["version"] == 1
    saved = {s: dict(v) for s, v in state["sets"].items()}
    assert set(saved[set_spec(t, SET4)]) == {"203.0.113.21"}  # no static entry
    assert set(saved[set_spec(t, SHORT)]) == {"203.0.113.44"}
    destroy_sets(t)
    time.sleep(SHORT_TIMEOUT + 1)  # the short one runs out while the router is "off"

    t.start_daemon()
    elapsed = time.monotonic() - measured
    after, after6 = t.members(SET4), t.members(SET6)
    left, left6 = before["203.0.113.21"], before6["2001:db8:100::21"]
    assert left is not None and left6 is not None
    got, got6 = after.get("203.0.113.21"), after6.get("2001:db8:100::21")
    # The time left went on counting while the daemon was stopped.
    assert got is not None and abs(got - (left - elapsed)) <= 3, (before, after, elapsed)
    assert got6 is not None and abs(got6 - (left6 - elapsed)) <= 3, (before6, after6)
    assert STATIC in after and not after[STATIC], after  # from the config, permanent
    assert "203.0.113.44" not in t.members(SHORT), t.members(SHORT)
    log = t.log()  # the new daemon's
    assert "2 learned addresses restored" in log and "1 expired" in log, log


def test_a_corrupt_state_file_never_stops_a_start(topo: Topology) -> None:
    t = topo
    assert t.stop_daemon() == 0, t.log()
    (t.tmp / "state.json").write_bytes(b'{"format": "hrneo-state", "version": 1, "sets": {"hr')
    t.start_daemon()
    assert t.daemon_alive()
    assert f"state file {t.tmp / 'state.json'} ignored: not JSON" in t.log(), t.log()
    # It still routes, and its next write replaces the broken file.
    assert resolve(t, "www.example.org") == ["203.0.113.21"]
    assert wait_for(lambda: "203.0.113.21" in t.members(SET4), timeout=5)
    assert t.stop_daemon() == 0
    assert json.loads((t.tmp / "state.json").read_text())["format"] == "hrneo-state"
