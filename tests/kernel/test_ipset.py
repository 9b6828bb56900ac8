"""IpsetBatch and IpsetSession against the real kernel, in private namespaces.

The CLI (`ipset list` run inside the namespace) is the independent witness of
what the kernel holds.
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
from hrneo import IpsetBatch, IpsetSession
from hrneo.coretypes import IpsetInfo
from hrneo.errors import IpsetError
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel


@pytest.fixture
def ns(netns: Netns) -> Iterator[Netns]:
    """The test body runs inside a fresh namespace (ipset sets are per namespace)."""
    require(shutil.which("ipset") is not None, "needs the `ipset` program")
    with netns.enter():
        yield netns


@pytest.fixture
def helpers(ns: Netns) -> Iterator[IpsetSession]:
    """A session opened inside the test's namespace."""
    with IpsetSession() as session:
        yield session


def cli_members(ns: Netns, name: str) -> dict[str, int | None]:
    """Members as the ipset program sees them: address -> timeout left (None without)."""
    out = ns.sh(f"ipset list -o save {name}").stdout
    members: dict[str, int | None] = {}
    for line in out.splitlines():
        m = re.match(rf"add {re.escape(name)} (\S+)(?: timeout (\d+))?", line)
        if m:
            members[m.group(1)] = int(m.group(2)) if m.group(2) else None
    return members


def wait_until(cond, limit: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll `cond` every 0.1 s for at most `limit` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


# ------------------------------------------------------------ new-list semantics


def test_new_then_present(ns: Netns) -> None:
    ns.sh("ipset create s4 hash:ip")
    b = IpsetBatch("s4")
    b.add("192.0.2.1")
    assert len(b) == 1
    assert b.commit() == ["192.0.2.1"]
    assert len(b) == 0
    b.add("192.0.2.1")
    assert b.commit() == []
    assert list(cli_members(ns, "s4")) == ["192.0.2.1"]
    assert b.commit() == []  # empty queue: nothing sent, nothing new


def test_mixed_batch_reports_only_new_in_order_deduplicated(ns: Netns) -> None:
    ns.sh("ipset create s4 hash:ip")
    ns.sh("ipset add s4 192.0.2.2")
    ns.sh("ipset add s4 192.0.2.4")
    b = IpsetBatch("s4")
    b.extend(["192.0.2.3", "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"])
    assert len(b) == 5
    assert b.commit() == ["192.0.2.3", "192.0.2.1", "192.0.2.5"]
    assert sorted(cli_members(ns, "s4")) == [f"192.0.2.{i}" for i in range(1, 6)]


def test_clear_drops_queue(ns: Netns) -> None:
    ns.sh("ipset create s4 hash:ip")
    b = IpsetBatch("s4")
    b.extend(["192.0.2.1", "192.0.2.2"])
    b.clear()
    assert len(b) == 0
    assert b.commit() == []
    assert cli_members(ns, "s4") == {}


@pytest.mark.parametrize("batch_timeout", [600, None])
def test_present_entry_gets_timeout_refreshed(ns: Netns, batch_timeout: int | None) -> None:
    ns.sh("ipset create st hash:ip timeout 600")
    b = IpsetBatch("st", timeout=batch_timeout)
    b.extend(["192.0.2.1", "192.0.2.2"])
    assert b.commit() == ["192.0.2.1", "192.0.2.2"]
    assert wait_until(lambda: (cli_members(ns, "st")["192.0.2.1"] or 0) <= 597, 5.0)
    b.add("192.0.2.1")  # present: refreshed, not reported
    b.add("192.0.2.3")  # new
    assert b.commit() == ["192.0.2.3"]
    left = cli_members(ns, "st")
    assert left["192.0.2.1"] is not None and left["192.0.2.1"] >= 599
    assert left["192.0.2.2"] is not None and left["192.0.2.2"] <= 597  # not in the batch


def test_expired_entry_counts_as_new(ns: Netns) -> None:
    ns.sh("ipset create st hash:ip timeout 1")
    b = IpsetBatch("st", timeout=1)
    b.add("192.0.2.9")
    assert b.commit() == ["192.0.2.9"]
    time.sleep(2.5)
    assert "192.0.2.9" not in cli_members(ns, "st")
    b.add("192.0.2.9")
    assert b.commit() == ["192.0.2.9"]


def test_per_batch_timeout_is_applied(ns: Netns) -> None:
    ns.sh("ipset create st hash:ip timeout 600")
    b = IpsetBatch("st", timeout=3600)
    b.add("192.0.2.1")
    assert b.commit() == ["192.0.2.1"]
    left = cli_members(ns, "st")["192.0.2.1"]
    assert left is not None and 3590 <= left <= 3600


def test_ipv6_into_inet6_set(ns: Netns) -> None:
    ns.sh("ipset create s6 hash:ip family inet6")
    b = IpsetBatch("s6")
    b.extend(["2001:db8::1", "2001:DB8:0::2"])
    assert b.commit() == ["2001:db8::1", "2001:db8::2"]
    b.add("2001:db8::2")
    assert b.commit() == []
    assert sorted(cli_members(ns, "s6")) == ["2001:db8::1", "2001:db8::2"]


def test_hash_net_networks_and_hosts(ns: Netns, helpers: IpsetSession) -> None:
    ns.sh("ipset create sn hash:net")
    b = IpsetBatch("sn")
    b.extend(["203.0.113.0/24", "198.51.100.7", "192.0.2.77/25", "198.51.100.8/32"])
    assert b.commit() == ["203.0.113.0/24", "198.51.100.7", "192.0.2.0/25", "198.51.100.8"]
    assert sorted(cli_members(ns, "sn")) == sorted(
        ["203.0.113.0/24", "198.51.100.7", "192.0.2.0/25", "198.51.100.8"]
    )
    b.add("203.0.113.0/24")
    assert b.commit() == []
    assert helpers.test("sn", "203.0.113.200")
    assert not helpers.test("sn", "198.51.100.9")


def test_hash_net_ipv6_network(ns: Netns, helpers: IpsetSession) -> None:
    ns.sh("ipset create sn6 hash:net family inet6")
    b = IpsetBatch("sn6")
    b.extend(["2001:db8:1::/48", "2001:db8::5"])
    assert b.commit() == ["2001:db8:1::/48", "2001:db8::5"]
    assert sorted(helpers.members("sn6")) == ["2001:db8:1::/48", "2001:db8::5"]


def test_ten_thousand_in_one_commit(ns: Netns, helpers: IpsetSession) -> None:
    ns.sh("ipset create big hash:ip maxelem 65536 timeout 600")
    addrs = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(10_000)]
    b = IpsetBatch("big", timeout=600)
    b.extend(addrs)
    assert b.commit() == addrs
    out = ns.sh("ipset list -t big").stdout
    assert "Number of entries: 10000" in out
    assert set(cli_members(ns, "big")) == set(addrs)
    # All present now (the refresh round is exercised at scale too); a few new at the end.
    b.extend([*addrs, "203.0.113.1", "203.0.113.2"])
    assert b.commit() == ["203.0.113.1", "203.0.113.2"]
    assert helpers.info("big")["entries"] == 10_002


# ------------------------------------------------------------ errors


def test_unknown_set(ns: Netns) -> None:
    b = IpsetBatch("nosuchset")
    b.add("192.0.2.1")
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert ei.value.errno == errno.ENOENT
    assert ei.value.set_name == "nosuchset"
    assert "ipset 'nosuchset': no such set" in str(ei.value)
    # Once the set exists, the same batch object works (the header is asked again).
    ns.sh("ipset create nosuchset hash:ip")
    b.add("192.0.2.1")
    assert b.commit() == ["192.0.2.1"]


@pytest.mark.parametrize(
    ("family", "addr", "words"),
    [
        ("inet", "2001:db8::1", "set is inet, address 2001:db8::1 is IPv6"),
        ("inet6", "192.0.2.1", "set is inet6, address 192.0.2.1 is IPv4"),
    ],
)
def test_family_mismatch(ns: Netns, family: str, addr: str, words: str) -> None:
    ns.sh(f"ipset create fam hash:ip family {family}")
    b = IpsetBatch("fam")
    b.add(addr)
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert words in str(ei.value)
    assert ei.value.set_name == "fam"
    assert cli_members(ns, "fam") == {}


def test_refused_entry_leaves_the_queue_and_the_good_ones_survive(ns: Netns) -> None:
    ns.sh("ipset create fam hash:ip family inet")
    b = IpsetBatch("fam")
    b.extend(["192.0.2.1", "2001:db8::1", "192.0.2.2"])
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert "1 refused entry; 2 still queued" in str(ei.value)
    assert len(b) == 2
    # The bad address is gone: the next commit sends the good ones.
    assert b.commit() == ["192.0.2.1", "192.0.2.2"]


@pytest.mark.parametrize(
    "bad", ["192.0.2.300", "example.com", "", "192.0.2.0/33", "2001:db8::/129"]
)
def test_unparsable_address_is_valueerror_at_add(ns: Netns, bad: str) -> None:
    ns.sh("ipset create s4 hash:net")
    b = IpsetBatch("s4")
    with pytest.raises(ValueError, match="not an IP address or network"):
        b.add(bad)
    assert len(b) == 0


def test_set_name_too_long(ns: Netns, helpers: IpsetSession) -> None:
    with pytest.raises(ValueError, match="invalid ipset name"):
        IpsetBatch("x" * 32)
    with pytest.raises(ValueError, match="invalid ipset name"):
        helpers.create("y" * 32)
    IpsetBatch("x" * 31)  # the longest allowed name is accepted


def test_set_full(ns: Netns) -> None:
    ns.sh("ipset create small hash:ip maxelem 2")
    b = IpsetBatch("small")
    b.extend(["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert "full" in str(ei.value)
    assert ei.value.errno == 4352  # IPSET_ERR_HASH_FULL
    assert len(cli_members(ns, "small")) == 2
    # the two that went in are not lost: the error says they were new
    assert ei.value.new == ["192.0.2.1", "192.0.2.2"]


def test_network_into_hash_ip_is_refused(ns: Netns) -> None:
    ns.sh("ipset create s4 hash:ip")
    b = IpsetBatch("s4")
    b.add("203.0.113.0/24")
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert "hash:net" in str(ei.value)
    assert cli_members(ns, "s4") == {}  # the kernel would have added 256 addresses


def test_timeout_on_set_without_timeouts(ns: Netns) -> None:
    ns.sh("ipset create s4 hash:ip")
    b = IpsetBatch("s4", timeout=60)
    b.add("192.0.2.1")
    with pytest.raises(IpsetError) as ei:
        b.commit()
    assert "timeout" in str(ei.value)
    b0 = IpsetBatch("s4", timeout=0)  # 0 = forever: fine for a set without timeouts
    b0.add("192.0.2.1")
    assert b0.commit() == ["192.0.2.1"]


def test_no_permission_is_permissionerror(ns: Netns) -> None:
    require(shutil.which("setpriv") is not None, "needs setpriv")
    code = (
        "import hrneo, sys\n"
        "b = hrneo.IpsetBatch('s4')\n"
        "b.add('192.0.2.1')\n"
        "try:\n"
        "    b.commit()\n"
        "except PermissionError as e:\n"
        "    print('EPERM', e); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    ns.sh("ipset create s4 hash:ip")
    # Root without CAP_NET_ADMIN: nfnetlink refuses every ipset request.
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
    assert cli_members(ns, "s4") == {}


# ------------------------------------------------------------ management helpers


def test_create_info_exists_destroy(ns: Netns, helpers: IpsetSession) -> None:
    assert not helpers.exists("m1")
    helpers.create("m1", "hash:ip", "inet", timeout=300, maxelem=1000)
    assert helpers.exists("m1")
    info = helpers.info("m1")
    assert info.keys() == IpsetInfo.__required_keys__  # the stub's type
    assert info["type"] == "hash:ip"
    assert info["family"] == "inet"
    assert info["timeout"] == 300
    assert info["maxelem"] == 1000
    assert info["entries"] == 0
    assert isinstance(info["size"], int) and info["size"] > 0
    out = ns.sh("ipset list -t m1").stdout
    assert "Type: hash:ip" in out and "timeout 300" in out and "maxelem 1000" in out
    with pytest.raises(FileExistsError):
        helpers.create("m1", "hash:ip")
    helpers.create("m1", "hash:net", exist_ok=True)  # an existing set is kept as is
    assert helpers.info("m1")["type"] == "hash:ip"
    helpers.create("m6", "hash:net", "inet6")
    info6 = helpers.info("m6")
    assert (info6["type"], info6["family"], info6["timeout"]) == ("hash:net", "inet6", None)
    helpers.destroy("m1")
    assert not helpers.exists("m1")
    with pytest.raises(IpsetError) as ei:
        helpers.destroy("m1")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match=r"list:set.* not supported"):
        helpers.create("m2", "list:set")
    with pytest.raises(ValueError, match="family must be 'inet' or 'inet6'"):
        helpers.create("m2", "hash:ip", "bridge")


def test_members_test_flush(ns: Netns, helpers: IpsetSession) -> None:
    helpers.create("m", "hash:net")
    ns.sh("ipset add m 192.0.2.1")
    ns.sh("ipset add m 203.0.113.0/24")
    assert sorted(helpers.members("m")) == ["192.0.2.1", "203.0.113.0/24"]
    assert helpers.test("m", "192.0.2.1")
    assert helpers.test("m", "203.0.113.5")
    assert not helpers.test("m", "192.0.2.2")
    with pytest.raises(IpsetError):
        helpers.test("m", "2001:db8::1")
    assert helpers.info("m")["entries"] == 2
    helpers.flush("m")
    assert helpers.members("m") == []
    assert cli_members(ns, "m") == {}
    for fn in (helpers.members, helpers.flush, helpers.info):
        with pytest.raises(IpsetError) as ei:
            fn("gone")
        assert ei.value.errno == errno.ENOENT


def test_swap(ns: Netns, helpers: IpsetSession) -> None:
    helpers.create("a", "hash:ip")
    helpers.create("b", "hash:ip")
    ns.sh("ipset add a 192.0.2.1")
    ns.sh("ipset add b 198.51.100.1")
    helpers.swap("a", "b")
    assert helpers.members("a") == ["198.51.100.1"]
    assert helpers.members("b") == ["192.0.2.1"]
    helpers.create("c", "hash:net")
    with pytest.raises(IpsetError):
        helpers.swap("a", "c")  # different types
    with pytest.raises(IpsetError) as ei:
        helpers.swap("a", "nope")
    assert ei.value.errno == errno.ENOENT
