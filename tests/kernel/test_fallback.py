"""The CLI fallbacks give the same answers as the netlink path: every scenario
runs through both backends against the real kernel, in private namespaces."""

from __future__ import annotations

import errno
import re
import shutil
import time
from collections.abc import Iterator
from typing import Callable, Union

import pytest
from conftest import require
from hrneo import IpsetBatch
from hrneo.errors import IpsetError
from hrneo.fallback import CliConntrackFlusher, CliIpsetBatch
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

AnyBatch = Union[IpsetBatch, CliIpsetBatch]
MakeBatch = Callable[..., AnyBatch]


@pytest.fixture
def ns(netns: Netns) -> Iterator[Netns]:
    """Run the test body inside a fresh namespace (CLI children inherit it)."""
    require(shutil.which("ipset") is not None, "needs the `ipset` program")
    with netns.enter():
        yield netns


@pytest.fixture(params=["netlink", "cli"])
def make_batch(request: pytest.FixtureRequest) -> MakeBatch:
    """IpsetBatch or CliIpsetBatch, same constructor."""
    cls = IpsetBatch if request.param == "netlink" else CliIpsetBatch

    def make(name: str, timeout: int | None = None) -> AnyBatch:
        return cls(name, timeout=timeout)

    return make


def timeouts(ns: Netns, name: str) -> dict[str, int]:
    out = ns.sh(f"ipset list -o save {name}").stdout
    return {m[0]: int(m[1]) for m in re.findall(rf"add {name} (\S+) timeout (\d+)", out)}


def test_same_new_lists(ns: Netns, make_batch: MakeBatch) -> None:
    ns.sh("ipset create s hash:net")
    ns.sh("ipset add s 192.0.2.2")
    b = make_batch("s")
    b.extend(["192.0.2.1", "192.0.2.2", "203.0.113.9/24", "192.0.2.1", "198.51.100.4/32"])
    assert len(b) == 4
    assert b.commit() == ["192.0.2.1", "203.0.113.0/24", "198.51.100.4"]
    assert len(b) == 0
    b.extend(["192.0.2.1", "203.0.113.0/24"])
    assert b.commit() == []


def test_same_ipv6(ns: Netns, make_batch: MakeBatch) -> None:
    ns.sh("ipset create s6 hash:net family inet6")
    b = make_batch("s6")
    b.extend(["2001:DB8::1", "2001:db8:5::/48"])
    assert b.commit() == ["2001:db8::1", "2001:db8:5::/48"]
    b.add("2001:db8::1")
    assert b.commit() == []


def test_same_timeout_refresh_and_expiry(ns: Netns, make_batch: MakeBatch) -> None:
    ns.sh("ipset create st hash:ip timeout 600")
    b = make_batch("st", timeout=600)
    b.add("192.0.2.1")
    assert b.commit() == ["192.0.2.1"]
    end = time.monotonic() + 5
    while timeouts(ns, "st")["192.0.2.1"] > 597 and time.monotonic() < end:
        time.sleep(0.2)
    assert timeouts(ns, "st")["192.0.2.1"] <= 597
    b.add("192.0.2.1")
    assert b.commit() == []
    assert timeouts(ns, "st")["192.0.2.1"] >= 599
    ns.sh("ipset create sx hash:ip timeout 1")
    bx = make_batch("sx", timeout=1)
    bx.add("192.0.2.7")
    assert bx.commit() == ["192.0.2.7"]
    time.sleep(2.5)
    bx.add("192.0.2.7")
    assert bx.commit() == ["192.0.2.7"]


def test_same_big_batch(ns: Netns, make_batch: MakeBatch) -> None:
    ns.sh("ipset create big hash:ip maxelem 65536")
    addrs = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(10_000)]
    b = make_batch("big")
    b.extend(addrs)
    assert b.commit() == addrs
    assert "Number of entries: 10000" in ns.sh("ipset list -t big").stdout
    b.extend([*addrs[:100], "203.0.113.1"])
    assert b.commit() == ["203.0.113.1"]


def test_same_errors(ns: Netns, make_batch: MakeBatch) -> None:
    b = make_batch("missing")
    b.add("192.0.2.1")
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert ei.value.errno == errno.ENOENT and ei.value.set_name == "missing"
    assert "no such set" in str(ei.value)

    ns.sh("ipset create s4 hash:ip maxelem 2")
    b = make_batch("s4")
    b.add("2001:db8::1")
    with pytest.raises(IpsetError, match="set is inet, address 2001:db8::1 is IPv6"):
        b.commit()
    b.clear()
    b.add("203.0.113.0/24")
    with pytest.raises(IpsetError, match="hash:net"):
        b.commit()
    # A refused entry leaves the queue; the good ones stay for the next commit.
    b.extend(["192.0.2.9", "2001:db8::9"])
    with pytest.raises(IpsetError, match=r"1 refused entry; 1 still queued"):
        b.commit()
    assert len(b) == 1
    assert b.commit() == ["192.0.2.9"]
    ns.sh("ipset flush s4")
    b.clear()
    b.extend(["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    with pytest.raises(IpsetError, match="full") as ei:
        b.commit()
    assert ei.value.errno == 4352
    assert ei.value.new == ["192.0.2.1", "192.0.2.2"]
    with pytest.raises(ValueError, match="not an IP address or network"):
        b.add("not-an-address")
    with pytest.raises(ValueError, match="invalid ipset name"):
        make_batch("n" * 32)
    b = make_batch("s4", timeout=30)
    b.add("192.0.2.1")
    with pytest.raises(IpsetError, match="timeout"):
        b.commit()


def test_cli_batch_runs_two_processes_per_commit(
    ns: Netns, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hrneo.fallback as fb

    calls: list[list[str]] = []
    real = fb._run

    def counting(argv: list[str], stdin: str | None = None):  # type: ignore[no-untyped-def]
        calls.append(argv)
        return real(argv, stdin)

    monkeypatch.setattr(fb, "_run", counting)
    ns.sh("ipset create s hash:ip")
    b = CliIpsetBatch("s")
    b.extend(f"192.0.2.{i}" for i in range(1, 201))
    assert len(b.commit()) == 200
    assert [c[:2] for c in calls] == [["ipset", "list"], ["ipset", "restore"]]


# ------------------------------------------------------------ conntrack


def _insert(ns: Netns, src: str, dst: str, sport: int, proto: str = "udp") -> None:
    ns.sh(
        f"conntrack -I -p {proto} -s {src} -d {dst} --sport {sport} --dport 53 -t 300"
        + (" --state ESTABLISHED" if proto == "tcp" else "")
    )


def _left(ns: Netns) -> list[str]:
    out = ns.sh("conntrack -L").stdout
    return sorted(re.findall(r"^\w+\s+\d+\s+\d+.*?dst=(\S+)", out, flags=re.MULTILINE))


@pytest.mark.parametrize("backend", ["netlink", "cli"])
def test_conntrack_flushers_agree(ns: Netns, backend: str) -> None:
    require(shutil.which("conntrack") is not None, "needs the `conntrack` program")
    for i in range(1, 6):
        _insert(ns, "192.0.2.1", f"198.51.100.{i}", 1000 + i)
        _insert(ns, "192.0.2.1", "198.51.100.1", 2000 + i, "tcp")  # 5 more to .1
    _insert(ns, "2001:db8::1", "2001:db8::2", 3000)
    _insert(ns, "2001:db8::1", "2001:db8::3", 3001)
    if backend == "netlink":
        from hrneo import ConntrackFlusher

        flusher: ConntrackFlusher | CliConntrackFlusher = ConntrackFlusher()
    else:
        flusher = CliConntrackFlusher()
    # .1 has 6 entries, .3 one, 2001:db8::2 one; 203.0.113.9 none.
    assert flusher.flush(["198.51.100.1", "198.51.100.3", "2001:db8::2", "203.0.113.9"]) == 8
    assert _left(ns) == sorted(["198.51.100.2", "198.51.100.4", "198.51.100.5", "2001:db8::3"])
    assert flusher.flush(["198.51.100.1"]) == 0
    assert flusher.flush([]) == 0
