"""Helpers of the end-to-end modules: resolving from the client, waiting for set
members, the daemon's status, the router's rules."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from dnsserver import query_tcp, query_udp
from topology import DNS4, PYTHON, REPO, SET4, SET6, Topology, wait_for


def hrneo(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m hrneo ARGS` from this checkout."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    return subprocess.run(
        [PYTHON, "-m", "hrneo", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def resolve(
    t: Topology, name: str, qtype: str = "A", *, tcp: bool = False, server: str = DNS4
) -> list[str]:
    """Resolve from the client host through the router; return the answer's addresses."""
    with t.client.enter():
        answer = (query_tcp if tcp else query_udp)(server, name, qtype)
    return answer.addresses()


def in_set(t: Topology, addr: str, timeout: float = 5.0) -> bool:
    """Wait (bounded) until `addr` is in the policy's set of its family."""
    set_name = SET6 if ":" in addr else SET4
    return bool(wait_for(lambda: addr in t.members(set_name), timeout=timeout))


def status(t: Topology) -> dict[str, Any]:
    """The running daemon's `status --json`."""
    out = hrneo("status", "--json", "--socket", str(t.control))
    assert out.returncode == 0, out.stderr
    st: dict[str, Any] = json.loads(out.stdout)
    return st


def sentinel(t: Topology, label: str) -> None:
    """Resolve a fresh watched name and wait until it is in the set: the daemon reads
    in order, so what was captured before it has been handled by then."""
    addr = f"203.0.113.{200 + sum(label.encode()) % 50}"
    name = f"{label}.sentinel.example.org"
    t.dns.set(name, "A", addr)
    assert resolve(t, name) == [addr]
    if not in_set(t, addr):
        counters = {k: v for k, v in status(t).items() if isinstance(v, (int, dict))}
        raise AssertionError(f"sentinel {name} never reached the set:\n{t.log()}\n{counters}")
    assert wait_for(lambda: status(t)["flush_pending"] == 0), status(t)


def all_members(t: Topology) -> set[str]:
    """Both sets' members."""
    return set(t.members(SET4)) | set(t.members(SET6))


def hrneo_rules(t: Topology) -> list[str]:
    """Every rule, ip rule and table route of hrneo's in the router, sorted."""
    dump = t.firewall_dump().splitlines()
    return sorted(x for x in dump if "hrneo:" in x or "lookup" in x or x.startswith("default"))
