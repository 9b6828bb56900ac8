"""NftSetBatch and NftSetSession against the real kernel, in private namespaces.

The `nft` program (run inside the namespace) is the independent witness of what
the kernel holds; the tests beside the ipset ones (test_ipset.py), same semantics.
"""

from __future__ import annotations

import errno
import re
import shutil
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import require
from hrneo import NftSetBatch, NftSetSession
from hrneo._core import nft_refresh_mode
from hrneo.coretypes import NftSetInfo
from hrneo.errors import NftSetError, SetError
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

_DURATION = re.compile(r"(\d+)(d|h|ms|m|s)")
_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@pytest.fixture
def ns(netns: Netns) -> Iterator[Netns]:
    """The test body runs inside a fresh namespace (nf_tables is per namespace)."""
    require(shutil.which("nft") is not None, "needs the `nft` program")
    with netns.enter():
        yield netns


@pytest.fixture
def nft(ns: Netns) -> Iterator[NftSetSession]:
    """A session opened inside the test's namespace."""
    with NftSetSession() as session:
        yield session


def seconds(text: str) -> float:
    """nft's `1h2m3s4ms` in seconds."""
    return sum(int(n) * _UNIT[u] for n, u in _DURATION.findall(text))


def cli_members(ns: Netns, spec: str) -> dict[str, float | None]:
    """Members as `nft list set` shows them: element -> seconds left (None: never expires)."""
    family, table, name = spec.split("#")
    out = ns.sh(f"nft list set {family} {table} {name}").stdout
    m = re.search(r"elements = \{(.*?)\}", out, re.DOTALL)
    found: dict[str, float | None] = {}
    for item in m.group(1).split(",") if m else []:
        words = item.split()
        if not words:
            continue
        left = words[words.index("expires") + 1] if "expires" in words else None
        found[words[0]] = seconds(left) if left else None
    return found


def wait_until(cond, limit: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll `cond` every 0.1 s for at most `limit` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def kernel_updates(ns: Netns) -> bool:
    """Whether a plain add resets a present element's timeout here (Linux 6.12+):
    learned as the batch learns it, from a refresh in auto mode."""
    if nft_refresh_mode() is None:
        with NftSetSession() as s:
            s.create("inet#hrneo_probe#p", timeout=0)
        for timeout in (60, 3600):  # the second commit refreshes: 60 s left of 3600
            with NftSetBatch("inet#hrneo_probe#p", timeout=timeout) as b:
                b.add("192.0.2.1")
                b.commit()
        ns.sh("nft delete table inet hrneo_probe")
    return nft_refresh_mode() == "update"


S4 = "inet#hrneo#s4"
S6 = "inet#hrneo#s6"


# ------------------------------------------------------------ new-list semantics


@pytest.mark.parametrize("interval", [True, False])
def test_new_then_present(ns: Netns, nft: NftSetSession, interval: bool) -> None:
    nft.create(S4, interval=interval)
    b = NftSetBatch("s4")  # a bare name is a set in inet hrneo
    assert b.set_name == S4
    b.add("192.0.2.1")
    assert len(b) == 1
    assert b.commit() == ["192.0.2.1"]
    assert len(b) == 0
    b.add("192.0.2.1")
    assert b.commit() == []
    assert list(cli_members(ns, S4)) == ["192.0.2.1"]
    assert b.commit() == []  # empty queue: nothing sent, nothing new


@pytest.mark.parametrize("interval", [True, False])
def test_mixed_batch_reports_only_new_in_order_deduplicated(
    ns: Netns, nft: NftSetSession, interval: bool
) -> None:
    nft.create(S4, interval=interval)
    ns.sh("nft add element inet hrneo s4 { 192.0.2.2, 192.0.2.4 }")
    b = NftSetBatch(S4)
    b.extend(["192.0.2.3", "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"])
    assert len(b) == 5
    assert b.commit() == ["192.0.2.3", "192.0.2.1", "192.0.2.5"]
    assert sorted(cli_members(ns, S4)) == [f"192.0.2.{i}" for i in range(1, 6)]


@pytest.mark.parametrize("refresh", ["auto", "update", "readd"])
@pytest.mark.parametrize("interval", [True, False])
def test_present_entry_gets_its_timeout_reset(
    ns: Netns, nft: NftSetSession, refresh: str, interval: bool
) -> None:
    nft.create(S4, interval=interval, timeout=600)
    b = NftSetBatch(S4, timeout=600, refresh=refresh)  # type: ignore[arg-type]
    b.extend(["192.0.2.1", "192.0.2.2"])
    assert b.commit() == ["192.0.2.1", "192.0.2.2"]
    assert wait_until(lambda: (cli_members(ns, S4)["192.0.2.1"] or 600) <= 597, 5.0)
    b.add("192.0.2.1")  # present: refreshed, not reported
    b.add("192.0.2.3")  # new
    assert b.commit() == ["192.0.2.3"]
    left = cli_members(ns, S4)
    assert left["192.0.2.1"] is not None
    if refresh == "update" and not kernel_updates(ns):
        # Before 6.12 a plain add of a present element changes nothing (the reason
        # for "readd", which "auto" picks there).
        assert left["192.0.2.1"] <= 597
    else:
        assert left["192.0.2.1"] >= 599
    assert left["192.0.2.2"] is not None and left["192.0.2.2"] <= 597  # not in the batch
    assert nft.test(S4, "192.0.2.1") and nft.test(S4, "192.0.2.3")


def test_set_default_timeout_is_what_a_present_entry_is_reset_to(
    ns: Netns, nft: NftSetSession
) -> None:
    nft.create(S4, timeout=300)
    b = NftSetBatch(S4)  # no timeout of its own: the set's default
    b.add("192.0.2.1")
    assert b.commit() == ["192.0.2.1"]
    assert wait_until(lambda: (cli_members(ns, S4)["192.0.2.1"] or 300) <= 297, 5.0)
    b.add("192.0.2.1")
    assert b.commit() == []
    assert (cli_members(ns, S4)["192.0.2.1"] or 0) >= 299


def test_expired_entry_counts_as_new(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4, timeout=0)
    b = NftSetBatch(S4, timeout=1)
    b.add("192.0.2.9")
    assert b.commit() == ["192.0.2.9"]
    time.sleep(2.5)
    assert "192.0.2.9" not in cli_members(ns, S4)
    b.add("192.0.2.9")
    assert b.commit() == ["192.0.2.9"]


def test_timeout_zero_is_forever_even_beside_a_default(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4, timeout=60)
    b = NftSetBatch(S4, timeout=0)
    b.add("192.0.2.1")
    assert b.commit() == ["192.0.2.1"]
    assert cli_members(ns, S4) == {"192.0.2.1": None}


def test_ipv6_into_an_ipv6_set(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S6, "ipv6_addr", timeout=0)
    b = NftSetBatch(S6, timeout=600)
    b.extend(["2001:db8::1", "2001:DB8:0::2", "2001:db8:1::/48"])
    assert b.commit() == ["2001:db8::1", "2001:db8::2", "2001:db8:1::/48"]
    b.extend(["2001:db8::2", "2001:db8:1::7"])  # present, and inside the /48
    assert b.commit() == []
    assert sorted(cli_members(ns, S6)) == ["2001:db8:1::/48", "2001:db8::1", "2001:db8::2"]
    assert sorted(nft.members(S6)) == ["2001:db8:1::/48", "2001:db8::1", "2001:db8::2"]


def test_interval_set_networks_and_hosts(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4)
    b = NftSetBatch(S4)
    b.extend(["203.0.113.0/24", "198.51.100.7", "192.0.2.77/25", "198.51.100.8/32"])
    assert b.commit() == ["203.0.113.0/24", "198.51.100.7", "192.0.2.0/25", "198.51.100.8"]
    assert sorted(cli_members(ns, S4)) == sorted(
        ["203.0.113.0/24", "198.51.100.7", "192.0.2.0/25", "198.51.100.8"]
    )
    # A host inside a network of the set is in it already: not new, nothing added.
    b.extend(["203.0.113.0/24", "203.0.113.9", "192.0.2.0/26"])
    assert b.commit() == []
    assert len(cli_members(ns, S4)) == 4
    assert nft.test(S4, "203.0.113.200")
    assert not nft.test(S4, "198.51.100.9")
    # The address right after an interval is not in it.
    assert not nft.test(S4, "192.0.2.128")
    b.add("192.0.2.128")
    assert b.commit() == ["192.0.2.128"]


def test_a_thousand_in_one_commit_then_all_present(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S6, "ipv6_addr", timeout=0, size=65536)
    addrs = [f"2001:db8:b::{i:x}" for i in range(1, 3001)]
    b = NftSetBatch(S6, timeout=600)
    b.extend(addrs)
    assert b.commit() == addrs
    assert set(cli_members(ns, S6)) == set(addrs)
    # All present (looked up in several datagrams), a few new at the end.
    b.extend([*addrs, "2001:db8:c::1", "2001:db8:c::2"])
    assert b.commit() == ["2001:db8:c::1", "2001:db8:c::2"]
    assert nft.info(S6)["entries"] == 3002


def test_a_set_in_a_table_of_the_users_firewall(ns: Netns, nft: NftSetSession) -> None:
    # As OpenWrt's fw4 (or a user) declares it: hrneo only fills it.
    ns.sh("nft add table inet fw4")
    ns.sh("nft add set inet fw4 vpn_domains { type ipv4_addr; flags interval; }")
    b = NftSetBatch("inet#fw4#vpn_domains")
    b.extend(["192.0.2.1", "203.0.113.0/24"])
    assert b.commit() == ["192.0.2.1", "203.0.113.0/24"]
    assert sorted(cli_members(ns, "inet#fw4#vpn_domains")) == ["192.0.2.1", "203.0.113.0/24"]
    ns.sh("nft add table ip legacy")
    ns.sh("nft add set ip legacy v4 { type ipv4_addr; }")
    lb = NftSetBatch("ip#legacy#v4")
    lb.add("192.0.2.5")
    assert lb.commit() == ["192.0.2.5"]


# ------------------------------------------------------------ errors


def test_unknown_set(ns: Netns, nft: NftSetSession) -> None:
    b = NftSetBatch("nosuchset")
    b.add("192.0.2.1")
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert ei.value.errno == errno.ENOENT
    assert ei.value.set_name == "inet hrneo nosuchset"
    assert "nftables set inet hrneo nosuchset: no such set" in str(ei.value)
    assert isinstance(ei.value, SetError) and isinstance(ei.value, OSError)
    # Once the set exists, the same batch object works (its info is asked again).
    nft.create("nosuchset")
    b.add("192.0.2.1")
    assert b.commit() == ["192.0.2.1"]


@pytest.mark.parametrize(
    ("key", "addr", "words"),
    [
        ("ipv4_addr", "2001:db8::1", "set is ipv4_addr, address 2001:db8::1 is IPv6"),
        ("ipv6_addr", "192.0.2.1", "set is ipv6_addr, address 192.0.2.1 is IPv4"),
    ],
)
def test_family_mismatch(ns: Netns, nft: NftSetSession, key: str, addr: str, words: str) -> None:
    nft.create("fam", key)  # type: ignore[arg-type]
    b = NftSetBatch("fam")
    b.add(addr)
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert words in str(ei.value)
    assert cli_members(ns, "inet#hrneo#fam") == {}


def test_refused_entry_leaves_the_queue_and_the_good_ones_survive(
    ns: Netns, nft: NftSetSession
) -> None:
    nft.create(S4)
    b = NftSetBatch(S4)
    b.extend(["192.0.2.1", "2001:db8::1", "192.0.2.2"])
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert "1 refused entry; 2 still queued" in str(ei.value)
    assert len(b) == 2
    assert b.commit() == ["192.0.2.1", "192.0.2.2"]


def test_network_into_a_set_without_intervals_is_refused(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4, interval=False)
    b = NftSetBatch(S4)
    b.add("203.0.113.0/24")
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert "flags interval" in str(ei.value)
    assert cli_members(ns, S4) == {}


def test_set_full_keeps_the_ones_that_fit_and_says_so(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4, interval=False, size=2)
    b = NftSetBatch(S4)
    b.extend(["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert "full" in str(ei.value)
    assert ei.value.errno == errno.ENFILE
    # One refusal aborts the kernel's transaction: the rest went in by a second one.
    assert ei.value.new == ["192.0.2.1", "192.0.2.2"]
    assert sorted(cli_members(ns, S4)) == ["192.0.2.1", "192.0.2.2"]


def test_overlapping_interval_is_refused_alone(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4)
    ns.sh("nft add element inet hrneo s4 { 192.0.2.10-192.0.2.20 }")
    b = NftSetBatch(S4)
    b.extend(["198.51.100.1", "192.0.2.0/24", "198.51.100.2"])  # the /24 holds 10-20
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert "overlaps" in str(ei.value)
    assert ei.value.new == ["198.51.100.1", "198.51.100.2"]
    assert "198.51.100.2" in cli_members(ns, S4)


def test_timeout_on_a_set_without_timeouts(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4)
    b = NftSetBatch(S4, timeout=60)
    b.add("192.0.2.1")
    with pytest.raises(NftSetError) as ei:
        b.commit()
    assert "no timeout support" in str(ei.value)
    b0 = NftSetBatch(S4, timeout=0)  # 0 = forever: fine for a set without timeouts
    b0.add("192.0.2.1")
    assert b0.commit() == ["192.0.2.1"]


def test_not_an_address_set(ns: Netns) -> None:
    ns.sh("nft add table inet t")
    ns.sh("nft add set inet t marks { type mark; }")
    b = NftSetBatch("inet#t#marks")
    b.add("192.0.2.1")
    with pytest.raises(NftSetError, match="not of IPv4 or IPv6 addresses"):
        b.commit()


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "invalid nftables set name"),
        ("a#b#c#d", "not an nftables set"),
        ("bogus#t#s", "nftables family must be"),
        ("inet##s", "invalid nftables table name"),
        ("x" * 256, "invalid nftables set name"),
    ],
)
def test_bad_set_names_are_valueerrors(ns: Netns, bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        NftSetBatch(bad)


def test_no_permission_is_permissionerror(ns: Netns, nft: NftSetSession) -> None:
    require(shutil.which("setpriv") is not None, "needs setpriv")
    nft.create(S4)
    code = (
        "import hrneo, sys\n"
        "b = hrneo.NftSetBatch('s4')\n"
        "b.add('192.0.2.1')\n"
        "try:\n"
        "    b.commit()\n"
        "except PermissionError as e:\n"
        "    print('EPERM', e); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    proc = ns.sh(
        [
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            sys.executable,
            "-c",
            code,
        ],
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "s4" in proc.stdout
    assert cli_members(ns, S4) == {}


# ------------------------------------------------------------ management


def test_create_info_exists_destroy(ns: Netns, nft: NftSetSession) -> None:
    assert not nft.exists("m1")
    assert not nft.table_exists("inet", "hrneo")
    nft.create("m1", "ipv4_addr", interval=False, timeout=300, size=1000)
    assert nft.table_exists("inet", "hrneo")
    assert nft.exists("m1") and nft.exists("inet#hrneo#m1")
    info = nft.info("m1")
    assert info.keys() == NftSetInfo.__required_keys__  # the stub's type
    assert (info["family"], info["table"], info["name"]) == ("inet", "hrneo", "m1")
    assert (info["key"], info["interval"], info["timeout"]) == ("ipv4_addr", False, True)
    assert (info["default_timeout"], info["size"], info["entries"]) == (300.0, 1000, 0)
    out = ns.sh("nft list set inet hrneo m1").stdout
    assert "type ipv4_addr" in out and "timeout 5m" in out and "size 1000" in out
    with pytest.raises(FileExistsError):
        nft.create("m1")
    nft.create("m1", "ipv6_addr", exist_ok=True)  # an existing set is kept as is
    assert nft.info("m1")["key"] == "ipv4_addr"
    nft.create("m6", "ipv6_addr")
    info6 = nft.info("m6")
    assert (info6["key"], info6["interval"], info6["timeout"]) == ("ipv6_addr", True, False)
    nft.destroy("m1")
    assert not nft.exists("m1")
    with pytest.raises(NftSetError) as ei:
        nft.destroy("m1")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="key must be 'ipv4_addr' or 'ipv6_addr'"):
        nft.create("m2", "ether_addr")  # type: ignore[arg-type]
    nft.create_table("ip", "other")
    assert nft.table_exists("ip", "other") and not nft.table_exists("ip6", "other")


def test_members_test_flush_and_a_referenced_set(ns: Netns, nft: NftSetSession) -> None:
    nft.create("m")
    ns.sh("nft add element inet hrneo m { 192.0.2.1, 203.0.113.0/24, 198.51.100.1-198.51.100.5 }")
    assert sorted(nft.members("m")) == [
        "192.0.2.1",
        "198.51.100.1-198.51.100.5",
        "203.0.113.0/24",
    ]
    assert nft.test("m", "203.0.113.5") and nft.test("m", "198.51.100.3")
    assert not nft.test("m", "192.0.2.2")
    with pytest.raises(NftSetError):
        nft.test("m", "2001:db8::1")
    assert nft.info("m")["entries"] == 3
    nft.flush("m")
    assert nft.members("m") == []
    assert cli_members(ns, "inet#hrneo#m") == {}
    for fn in (nft.members, nft.flush, nft.info):
        with pytest.raises(NftSetError) as ei:
            fn("gone")
        assert ei.value.errno == errno.ENOENT
    ns.sh("nft add chain inet hrneo c")
    ns.sh("nft add rule inet hrneo c ip daddr @m accept")
    with pytest.raises(NftSetError) as ei:
        nft.destroy("m")
    assert ei.value.errno == errno.EBUSY
    assert "in use" in str(ei.value)


def test_expiries(ns: Netns, nft: NftSetSession) -> None:
    nft.create(S4, timeout=0)
    ns.sh("nft add element inet hrneo s4 { 192.0.2.1 timeout 1h, 192.0.2.2 }")
    got = dict(nft.expiries(S4))
    assert got["192.0.2.2"] is None
    left = got["192.0.2.1"]
    assert left is not None and 3590 < left <= 3600
