"""Plan.restore and Pipeline.learned against the real kernel, once per backend:
what a state file keeps across a reboot. The `ipset` and `nft` programs are the
witnesses of what the sets hold and the time each entry has left."""

from __future__ import annotations

import re
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require, require_kernel_tools
from hrneo import Pipeline, Plan
from hrneo.config import Config, load_config
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

GROUP = 102
BACKENDS = ("ipset", "nftables")

CONFIG = """\
nflog_group: {group}
policies:
  - name: vpn
    ipset: hr_st
    ipset6: hr_st6
    timeout: 600
    maxelem: 200000
    domains: [example.org]
    static: [198.51.100.0/28]
  - name: keep
    ipset: hr_stk
    reconnect: false
    timeout: 0
    domains: [example.net]
"""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_kernel_tools(*(("ipset",) if name == "ipset" else ("nft",)))
    return name


@pytest.fixture
def ns() -> Iterator[Netns]:
    require_kernel_tools()
    n = Netns("-st")
    try:
        with n.enter():
            yield n
    finally:
        n.delete()


def config(tmp: Path) -> Config:
    path = tmp / "hrneo.yaml"
    path.write_text(textwrap.dedent(CONFIG).format(group=GROUP))
    return load_config(str(path))[0]


def names(cfg: Config, backend: str) -> tuple[str, str, str]:
    vpn, keep = cfg.policies
    if backend == "nftables":
        assert vpn.nft_set6 is not None
        return vpn.nft_set4, vpn.nft_set6, keep.nft_set4
    assert vpn.ipset6 is not None
    return vpn.ipset, vpn.ipset6, keep.ipset


def members(ns: Netns, backend: str, spec: str) -> dict[str, int | None]:
    """The set as the kernel's own tool lists it: entry -> seconds left (None: never)."""
    found: dict[str, int | None] = {}
    if backend == "ipset":
        for line in ns.sh(f"ipset save {spec}").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "add":
                left = int(parts[parts.index("timeout") + 1]) if "timeout" in parts else None
                found[parts[2]] = left or None  # timeout 0: permanent
        return found
    family, table, name = spec.split("#")
    out = ns.sh(f"nft list set {family} {table} {name}").stdout
    m = re.search(r"elements = \{(.*?)\}", out, re.DOTALL)
    for item in m.group(1).split(",") if m else []:
        words = item.split()
        if not words:
            continue
        left = None
        if "expires" in words:
            spans = re.findall(r"(\d+)(d|h|ms|m|s)", words[words.index("expires") + 1])
            unit = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0}
            left = sum(int(n) * unit[u] for n, u in spans)
        found[words[0]] = left
    return found


def destroy(ns: Netns, backend: str, spec: str) -> None:
    """What a reboot does to a set."""
    if backend == "ipset":
        ns.sh(f"ipset destroy {spec}")
    else:
        family, table, name = spec.split("#")
        ns.sh(f"nft delete set {family} {table} {name}")


def near(got: int | None, want: int, slack: int = 3) -> bool:
    return got is not None and want - slack <= got <= want


def test_restore_and_learned(ns: Netns, backend: str, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    s4, s6, keep = names(cfg, backend)
    plan = Plan(cfg.watchlist, cfg.policies, backend=backend)  # type: ignore[arg-type]
    plan.prepare()
    added, notes = plan.restore(
        {
            s4: [
                ("192.0.2.10", 100),
                ("192.0.2.11", 99_999),  # longer than the policy's 600: capped
                ("198.51.100.0/28", 50),  # the static network: stays permanent
                ("203.0.113.0/24", 200),  # a learned network
                ("2001:db8::1", 100),  # the other family: left out
            ],
            s6: [("2001:db8::5", 300)],
            keep: [("192.0.2.20", 100)],  # timeout 0: nothing learned is saved there
            "hr_gone": [("192.0.2.30", 100)],
        }
    )
    assert (added, notes) == (4, [])
    m = members(ns, backend, s4)
    assert near(m["192.0.2.10"], 100) and near(m["192.0.2.11"], 600), m
    assert near(m["203.0.113.0/24"], 200), m
    assert m["198.51.100.0/28"] is None, m
    assert "2001:db8::1" not in m
    assert near(members(ns, backend, s6)["2001:db8::5"], 300)
    assert members(ns, backend, keep) == {}

    with Pipeline(plan, nflog_group=GROUP, conntrack="off") as p:  # type: ignore[arg-type]
        learned = p.learned()
        assert sorted(learned) == sorted([s4, s6, keep])
        got = dict(learned[s4])
        assert set(got) == {"192.0.2.10", "192.0.2.11", "203.0.113.0/24"}, learned
        assert near(got["192.0.2.10"], 100) and near(got["192.0.2.11"], 600)
        assert [e for e, _ in learned[s6]] == ["2001:db8::5"]
        assert learned[keep] == []

        # Present entries keep their own countdown, even when the file says more.
        assert p.restore({s4: [("192.0.2.10", 500)]}) == (0, [])
        assert near(members(ns, backend, s4)["192.0.2.10"], 100)

        # A reboot: the sets are gone; prepared again, then restored from the listing.
        for spec in (s4, s6, keep):
            destroy(ns, backend, spec)
        p.prepare()
        assert members(ns, backend, s4) == {"198.51.100.0/28": None}
        added, notes = p.restore(learned)
        assert (added, notes) == (4, [])
        again = dict(p.learned()[s4])
        assert again.keys() == got.keys()
        assert all(near(again[e], got[e]) for e in got), (again, got)


def test_restore_into_a_set_that_cannot_time_out(ns: Netns, backend: str, tmp_path: Path) -> None:
    """A set made without timeouts (by hand) takes nothing: the restore says so, and
    the other sets are restored all the same."""
    cfg = config(tmp_path)
    s4, s6, _ = names(cfg, backend)
    if backend == "ipset":
        ns.sh(f"ipset create {s4} hash:net family inet")
    else:
        ns.sh("nft add table inet hrneo")
        ns.sh(f"nft add set inet hrneo {s4.split('#')[2]} {{ type ipv4_addr; flags interval; }}")
    plan = Plan(cfg.watchlist, cfg.policies, backend=backend)  # type: ignore[arg-type]
    plan.prepare()
    added, notes = plan.restore({s4: [("192.0.2.10", 100)], s6: [("2001:db8::5", 300)]})
    assert added == 1
    assert len(notes) == 1 and "timeout" in notes[0] and "1 saved entries" in notes[0], notes
    assert "192.0.2.10" not in members(ns, backend, s4)


def test_100k_entries_listed_and_restored(ns: Netns, backend: str, tmp_path: Path) -> None:
    """The state file's work for a large set: one listing, one restore. Timings are
    printed (pytest -s) for the README; the bounds only catch a pathology."""
    require(shutil.which("ipset" if backend == "ipset" else "nft") is not None, "tool")
    cfg = config(tmp_path)
    s4, _, _ = names(cfg, backend)
    plan = Plan(cfg.watchlist, cfg.policies, backend=backend)  # type: ignore[arg-type]
    plan.prepare()
    n = 100_000
    entries = [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 300 + i % 300) for i in range(n)]
    t0 = time.monotonic()
    added, notes = plan.restore({s4: entries})
    restore_s = time.monotonic() - t0
    assert (added, notes) == (n, [])
    with Pipeline(plan, nflog_group=GROUP, conntrack="off") as p:  # type: ignore[arg-type]
        t0 = time.monotonic()
        learned = p.learned()
        list_s = time.monotonic() - t0
        assert len(learned[s4]) == n
        t0 = time.monotonic()
        again = p.restore({s4: entries})  # all present: nothing sent but the check
        present_s = time.monotonic() - t0
        assert again == (0, [])
    print(
        f"\n{backend}: restore of {n} entries {restore_s:.2f} s, listing {list_s:.2f} s, "
        f"restore with all present {present_s:.2f} s"
    )
    assert restore_s < 60 and list_s < 30
