"""The daemon on a fake core: batching, matching, flushing, errors, reload, signals;
and the exact firewall commands for a sample config. No root needed."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrneo.config import Config, load_config
from hrneo.daemon import Daemon, FlushWorker
from hrneo.firewall import Firewall, IpRule, IptRule, TableRoute, desired_items

# ------------------------------------------------------------------ fakes


class FakeSetGone(OSError):
    pass


class FakeSetFull(OSError):
    new: list[str]


@dataclass
class FakeKernel:
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> info + members

    def members(self, name: str) -> dict[str, int | None]:
        m: dict[str, int | None] = self.sets[name]["members"]
        return m


class FakeBatch:
    def __init__(self, kernel: FakeKernel, name: str, timeout: int | None) -> None:
        self.kernel, self.name, self.timeout = kernel, name, timeout
        self.queue: list[str] = []
        self.commits: list[list[str]] = []

    def add(self, ip: str) -> None:
        self.queue.append(ip)

    def extend(self, ips: Iterable[str]) -> None:
        self.queue.extend(ips)

    def clear(self) -> None:
        self.queue = []

    def commit(self) -> list[str]:
        queued, self.queue = self.queue, []
        self.commits.append(queued)
        if self.name not in self.kernel.sets:
            raise FakeSetGone(2, f"set {self.name} does not exist")
        members = self.kernel.members(self.name)
        limit = self.kernel.sets[self.name].get("limit")  # a set full past this many
        new: list[str] = []
        for ip in queued:
            if ip not in members:
                if limit is not None and len(members) >= limit:
                    # as IpsetBatch: the entries that went in as new ride on the error
                    err = FakeSetFull(4352, f"ipset {self.name!r}: set is full")
                    err.new = new
                    raise err
                new.append(ip)
            members[ip] = self.timeout
        return new


class FakeFlusher:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def flush(self, ips: Iterable[str]) -> int:
        ips = list(ips)
        self.calls.append(ips)
        return 3 * len(ips)  # pretend 3 connections per address


class FakeReader:
    def __init__(self, group: int) -> None:
        self.group = group
        self.rfd, self.wfd = os.pipe()
        self.queue: list[Any] = []
        self.closed = False

    def push(self, *events: Any) -> None:
        self.queue.extend(events)
        os.write(self.wfd, b"x")

    def fileno(self) -> int:
        return self.rfd

    def read(self, max_events: int = 1024, timeout: float | None = None) -> list[Any]:
        os.set_blocking(self.rfd, False)
        try:
            os.read(self.rfd, 4096)
        except BlockingIOError:
            pass
        out, self.queue = self.queue[:max_events], self.queue[max_events:]
        return out

    def stats(self) -> dict[str, int]:
        return {"packets": 0, "dns": 0, "malformed": 1, "dropped": 2}

    def close(self) -> None:
        if not self.closed:
            os.close(self.rfd)
            os.close(self.wfd)
            self.closed = True


class FakeBackend:
    def __init__(self) -> None:
        self.kernel = FakeKernel()
        self.batches: list[FakeBatch] = []
        self.flusher = FakeFlusher()
        self.flusher_track: bool | None = None
        self.readers: list[FakeReader] = []

    def open_reader(self, group: int) -> FakeReader:
        r = FakeReader(group)
        self.readers.append(r)
        return r

    def open_batch(self, set_name: str, timeout: int | None) -> FakeBatch:
        b = FakeBatch(self.kernel, set_name, timeout)
        self.batches.append(b)
        return b

    def open_flusher(self, track: bool = False) -> FakeFlusher:
        self.flusher_track = track
        return self.flusher

    def set_exists(self, name: str) -> bool:
        return name in self.kernel.sets

    def set_create(
        self, name: str, settype: str, family: str, timeout: int | None, maxelem: int | None
    ) -> None:
        self.kernel.sets[name] = {
            "type": settype, "family": family, "timeout": timeout, "members": {},
        }  # fmt: skip

    def set_info(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.kernel.sets[name].items() if k != "members"}

    def commits_to(self, name: str) -> list[list[str]]:
        return [c for b in self.batches if b.name == name for c in b.commits]


@dataclass
class Ev:
    qname: str
    chain: list[str]
    addresses: list[str]
    is_response: bool = True
    rcode: int = 0


class FakeRunner:
    """Records argv; `-C` (check) and `show` find nothing, everything else succeeds."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail_route = False

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        rc = 1 if "-C" in argv else 0
        if self.fail_route and "route" in argv and "replace" in argv:
            rc = 1
        return subprocess.CompletedProcess(argv, rc, "", "Cannot find device" if rc else "")


CONFIG = """\
nflog_group: 100
control_socket: {sock}
firewall:
  dns_chains: [OUTPUT]
  ipv6: true
  recheck_interval: 0
policies:
  - name: vpn1
    ipset: hr_vpn1
    ipset6: hr_vpn1_v6
    timeout: 600
    reconnect: true
    domains: [example.org]
    static: [203.0.113.0/24]
    route:
      interface: wg0
      table: 1001
      mark: 0x1001
  - name: plain
    ipset: hr_plain
    reconnect: false
    domains: [example.net, www.example.org]
"""


def make(tmp_path: Path, text: str = CONFIG) -> tuple[Daemon, FakeBackend, FakeRunner, Config]:
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(text).format(sock=tmp_path / "hrneo.sock"))
    cfg, _ = load_config(str(path))
    be = FakeBackend()
    runner = FakeRunner()
    d = Daemon(cfg, backend=be, firewall=Firewall(cfg.firewall, runner=runner), control=False)
    return d, be, runner, cfg


# ------------------------------------------------------------------ batch processing


def test_start_creates_sets_with_timeouts_and_static(tmp_path: Path) -> None:
    d, be, _runner, _ = make(tmp_path)
    d.start()
    try:
        sets = be.kernel.sets
        assert sets["hr_vpn1"]["type"] == "hash:net" and sets["hr_vpn1"]["timeout"] == 600
        assert sets["hr_vpn1_v6"]["family"] == "inet6"
        assert sets["hr_plain"]["timeout"] == 3600
        # static entries are permanent (timeout 0) in a timeout set
        assert be.kernel.members("hr_vpn1") == {"203.0.113.0/24": 0}
    finally:
        d.stop()


def test_queries_ignored_and_rcode_skipped(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    d.start()
    try:
        spoof = Ev("www.example.org", ["www.example.org"], ["192.0.2.66"], is_response=False)
        nx = Ev("a.example.org", ["a.example.org"], ["192.0.2.67"], rcode=3)
        d.process([spoof, nx])
        assert "192.0.2.66" not in be.kernel.members("hr_vpn1")
        assert "192.0.2.67" not in be.kernel.members("hr_vpn1")
        assert d.counters["queries_ignored"] == 1 and d.counters["rcode_skipped"] == 1
        assert be.flusher.calls == []
    finally:
        d.stop()


def test_cname_both_ways_and_most_specific(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    d.start()
    try:
        d.process(
            [
                # watched alias -> unwatched target
                Ev("video.example.org", ["video.example.org", "edge.cdn.test"], ["192.0.2.1"]),
                # unwatched alias -> watched target
                Ev("alias.test", ["alias.test", "x.example.net"], ["192.0.2.2"]),
                # www.example.org is in `plain`, more specific than example.org (vpn1)
                Ev("www.example.org", ["www.example.org"], ["192.0.2.3"]),
                Ev("unrelated.test", ["unrelated.test"], ["192.0.2.4"]),
                Ev("badexample.org", ["badexample.org"], ["192.0.2.5"]),
            ]
        )
        assert set(be.kernel.members("hr_vpn1")) == {"203.0.113.0/24", "192.0.2.1"}
        assert set(be.kernel.members("hr_plain")) == {"192.0.2.2", "192.0.2.3"}
        assert d.pstats["vpn1"].matched == 1 and d.pstats["plain"].matched == 2
    finally:
        d.stop()


def test_one_commit_per_set_per_batch_and_v6(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    d.start()
    try:
        learn = d.batches["hr_vpn1"]
        assert isinstance(learn, FakeBatch) and learn.commits == []
        events = [
            Ev(f"h{i}.example.org", [f"h{i}.example.org"], [f"192.0.2.{i}", f"2001:db8::{i}"])
            for i in range(1, 40)
        ]
        events.append(Ev("n.example.net", ["n.example.net"], ["2001:db8::99"]))
        d.process(events)
        assert len(learn.commits) == 1 and len(learn.commits[0]) == 39
        assert learn.timeout == 600
        assert len(d.batches["hr_vpn1_v6"].commits) == 1  # type: ignore[attr-defined]
        assert "2001:db8::5" in be.kernel.members("hr_vpn1_v6")
        # `plain` has no ipset6: its AAAA is dropped and counted, not sent anywhere
        assert d.pstats["plain"].v6_dropped == 1
        assert be.commits_to("hr_plain") == []
    finally:
        d.stop()


def test_flush_only_new_addresses_of_reconnect_policies(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    d.start()
    try:
        be.kernel.members("hr_vpn1")["192.0.2.10"] = 600  # already known
        d.process(
            [
                Ev("a.example.org", ["a.example.org"], ["192.0.2.10", "192.0.2.11"]),
                Ev("b.example.org", ["b.example.org"], ["2001:db8::11"]),
                Ev("c.example.net", ["c.example.net"], ["198.51.100.7"]),  # reconnect: false
            ]
        )
        assert d.flush_worker is not None and d.flush_worker.wait_idle(5)
        assert len(be.flusher.calls) == 1
        assert sorted(be.flusher.calls[0]) == ["192.0.2.11", "2001:db8::11"]
        st = d.pstats["vpn1"]
        assert (st.added, st.new, st.flushed) == (3, 2, 6)
        assert d.pstats["plain"].flushed == 0 and d.pstats["plain"].new == 1
        # the same answer again: nothing new, no flush
        d.process([Ev("a.example.org", ["a.example.org"], ["192.0.2.10", "192.0.2.11"])])
        assert d.flush_worker.wait_idle(5)
        assert len(be.flusher.calls) == 1
    finally:
        d.stop()


class GatedFlusher:
    """A flusher whose calls block until the test opens the gate; it records, per call,
    the addresses and whether each was already in the kernel's sets at that moment."""

    def __init__(self, kernel: FakeKernel | None = None, fail: int = 0) -> None:
        self.kernel = kernel
        self.fail = fail  # the first `fail` calls raise
        self.calls: list[list[str]] = []
        self.in_set_at_flush: list[bool] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def flush(self, ips: Iterable[str]) -> int:
        ips = list(ips)
        self.calls.append(ips)
        if self.kernel is not None:
            present = {a for s in self.kernel.sets.values() for a in s["members"]}
            self.in_set_at_flush += [a in present for a in ips]
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        if len(self.calls) <= self.fail:
            raise OSError(105, "No buffer space available")
        return len(ips)


def test_flush_worker_coalesces_while_a_flush_runs() -> None:
    f = GatedFlusher()
    results: list[tuple[list[str], dict[str, int], int | BaseException]] = []
    w = FlushWorker(f, lambda ips, share, r: results.append((ips, share, r)))
    try:
        w.submit(["192.0.2.1"], {"a": 1})
        assert f.entered.wait(5)  # the first flush is in flight, blocked
        w.submit(["192.0.2.2"], {"a": 1})
        w.submit(["192.0.2.3", "2001:db8::3"], {"a": 1, "b": 1})
        assert w.pending() == 3
        f.gate.set()
        assert w.wait_idle(5)
        # one call in flight, everything submitted meanwhile in ONE next call
        assert f.calls == [["192.0.2.1"], ["192.0.2.2", "192.0.2.3", "2001:db8::3"]]
        assert [r[1] for r in results] == [{"a": 1}, {"a": 2, "b": 1}]
        assert [r[2] for r in results] == [1, 3]
    finally:
        f.gate.set()
        assert w.close(5)


def test_flush_worker_error_is_reported_and_worker_goes_on() -> None:
    f = GatedFlusher(fail=1)
    f.gate.set()
    results: list[int | BaseException] = []
    w = FlushWorker(f, lambda ips, share, r: results.append(r))
    try:
        w.submit(["192.0.2.1"], {"a": 1})
        assert w.wait_idle(5)
        w.submit(["192.0.2.2"], {"a": 1})
        assert w.wait_idle(5)
        assert isinstance(results[0], OSError) and results[1] == 1
    finally:
        assert w.close(5)


def test_flush_worker_close_flushes_pending_and_is_bounded() -> None:
    f = GatedFlusher()
    w = FlushWorker(f, lambda ips, share, r: None)
    w.submit(["192.0.2.1"], {"a": 1})
    assert f.entered.wait(5)
    w.submit(["192.0.2.2"], {"a": 1})
    # the flush in flight never returns: close gives up after its timeout
    assert w.close(0.05) is False
    f.gate.set()  # now it returns; the pending address is still flushed before exit
    assert w.close(5) is True
    assert f.calls == [["192.0.2.1"], ["192.0.2.2"]]


def test_daemon_flushes_after_commit_off_the_loop_and_on_stop(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    f = GatedFlusher(be.kernel)
    be.flusher = f  # type: ignore[assignment]
    d.start()
    stopped = False
    try:
        d.process([Ev("a.example.org", ["a.example.org"], ["192.0.2.50"])])
        # process() returned while the flush is still blocked: it is off the loop
        assert f.entered.wait(5)
        assert "192.0.2.50" in be.kernel.members("hr_vpn1")
        d.process([Ev("b.example.org", ["b.example.org"], ["192.0.2.51", "2001:db8::51"])])
        f.gate.set()
        d.stop()  # joins the worker: the pending addresses are flushed first
        stopped = True
        assert f.calls == [["192.0.2.50"], ["192.0.2.51", "2001:db8::51"]]
        assert f.in_set_at_flush == [True, True, True]  # never flushed before being in a set
        assert d.counters["flushed"] == 3 and d.pstats["vpn1"].flushed == 3
    finally:
        f.gate.set()
        if not stopped:
            d.stop()


def test_commit_error_recreates_set_and_keeps_running(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    d.start()
    try:
        del be.kernel.sets["hr_vpn1"]  # someone ran `ipset destroy`
        d.process([Ev("a.example.org", ["a.example.org"], ["192.0.2.20"])])
        assert "192.0.2.20" in be.kernel.members("hr_vpn1")
        assert "203.0.113.0/24" in be.kernel.members("hr_vpn1")  # static re-added
        assert d.counters["commit_errors"] == 1 and d.pstats["vpn1"].errors == 1

        # a set that cannot be recreated: logged and counted, the daemon goes on
        def broken_create(*a: Any, **k: Any) -> None:
            raise PermissionError(1, "Operation not permitted")

        del be.kernel.sets["hr_vpn1"]
        be.set_create = broken_create  # type: ignore[method-assign]
        d.process([Ev("b.example.org", ["b.example.org"], ["192.0.2.21"])])
        assert d.counters["commit_errors"] == 2
        d.process([Ev("c.example.net", ["c.example.net"], ["192.0.2.22"])])
        assert "192.0.2.22" in be.kernel.members("hr_plain")
    finally:
        d.stop()


def test_partly_failed_commit_still_counts_and_flushes_what_went_in(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    d.start()
    try:
        info = be.kernel.sets["hr_vpn1"]
        info["limit"] = len(info["members"]) + 2  # room for two more entries
        d.process(
            [Ev("a.example.org", ["a.example.org"], ["192.0.2.30", "192.0.2.31", "192.0.2.32"])]
        )
        assert set(be.kernel.members("hr_vpn1")) >= {"192.0.2.30", "192.0.2.31"}
        assert "192.0.2.32" not in be.kernel.members("hr_vpn1")
        assert d.counters["commit_errors"] >= 1
        assert d.pstats["vpn1"].new == 2
        # the two that went in are new to the set: their connections are flushed
        assert d.flush_worker is not None and d.flush_worker.wait_idle(5)
        assert [sorted(c) for c in be.flusher.calls] == [["192.0.2.30", "192.0.2.31"]]
    finally:
        d.stop()


# ------------------------------------------------------------------ reload and signals


def test_reload_bad_config_keeps_old(tmp_path: Path) -> None:
    d, be, _r, cfg = make(tmp_path)
    d.start()
    try:
        Path(cfg.path).write_text("policies:\n  - name: p\n    ipset: s\n    tiemout: 5\n")
        assert d.reload() is False
        assert d.config is cfg
        assert d.last_reload is not None and d.last_reload["ok"] is False
        assert ":4:" in d.last_reload["message"] and "tiemout" in d.last_reload["message"]
        d.process([Ev("a.example.org", ["a.example.org"], ["192.0.2.30"])])
        assert "192.0.2.30" in be.kernel.members("hr_vpn1")
    finally:
        d.stop()


def test_reload_applies_difference(tmp_path: Path) -> None:
    d, be, runner, cfg = make(tmp_path)
    d.start()
    try:
        reader = d.reader
        be.kernel.members("hr_vpn1")["192.0.2.40"] = 600
        text = Path(cfg.path).read_text()
        # drop vpn1's route, add a policy with its own set
        text = text.replace(
            "    route:\n      interface: wg0\n      table: 1001\n      mark: 0x1001\n", ""
        )
        text += "  - name: extra\n    ipset: hr_extra\n    domains: [example.com]\n"
        Path(cfg.path).write_text(text)
        runner.calls.clear()
        assert d.reload() is True
        assert d.reader is reader  # same nflog group: the socket stays open
        assert "hr_extra" in be.kernel.sets
        assert "192.0.2.40" in be.kernel.members("hr_vpn1")  # sets are never flushed
        removed = [c for c in runner.calls if "-D" in c or "del" in c]
        assert ["iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-m", "set",
                "--match-set", "hr_vpn1", "dst", "-m", "comment", "--comment", "hrneo:vpn1",
                "-j", "MARK", "--set-xmark", "0x1001/0xffffffff"] in removed  # fmt: skip
        assert ["ip", "-4", "rule", "del", "fwmark", "0x1001/0xffffffff", "table", "1001",
                "priority", "9000"] in removed  # fmt: skip
        assert not any("NFLOG" in c for c in removed)  # DNS rules untouched
        d.process([Ev("www.example.com", ["www.example.com"], ["192.0.2.41"])])
        assert "192.0.2.41" in be.kernel.members("hr_extra")
    finally:
        d.stop()


def test_stop_removes_everything_installed(tmp_path: Path) -> None:
    d, _be, runner, cfg = make(tmp_path)
    d.start()
    installed = [c for c in runner.calls if "-I" in c or "add" in c or "replace" in c]
    runner.calls.clear()
    d.stop()
    removed = [c for c in runner.calls if "-D" in c or "del" in c]
    assert len(removed) == len(installed) == len(desired_items(cfg))
    assert d.firewall.items == []


def test_run_handles_real_signals(tmp_path: Path) -> None:
    d, be, _r, _cfg = make(tmp_path)
    pid = os.getpid()
    timers = [
        threading.Timer(0.3, os.kill, (pid, signal.SIGHUP)),
        threading.Timer(0.8, os.kill, (pid, signal.SIGTERM)),
    ]
    for t in timers:
        t.start()
    try:
        assert d.run() == 0
    finally:
        for t in timers:
            t.cancel()
    assert d.last_reload is not None and d.last_reload["ok"] is True
    assert be.readers[0].closed and d.firewall.items == []


# ------------------------------------------------------------------ firewall commands


def test_firewall_argv_for_sample_config(tmp_path: Path) -> None:
    _d, _be, runner, cfg = make(tmp_path)
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)
    nflog = ["-p", "udp", "--sport", "53", "-m", "comment", "--comment", "hrneo:dns",
             "-j", "NFLOG", "--nflog-group", "100"]  # fmt: skip
    mark = ["-m", "set", "--match-set", "hr_vpn1", "dst", "-m", "comment", "--comment",
            "hrneo:vpn1", "-j", "MARK", "--set-xmark", "0x1001/0xffffffff"]  # fmt: skip
    mark6 = [w.replace("hr_vpn1", "hr_vpn1_v6") for w in mark]
    expect = [
        ["iptables", "-w", "-t", "filter", "-C", "OUTPUT", *nflog],
        ["iptables", "-w", "-t", "filter", "-I", "OUTPUT", "1", *nflog],
        ["iptables", "-w", "-t", "mangle", "-C", "PREROUTING", *mark],
        ["iptables", "-w", "-t", "mangle", "-I", "PREROUTING", "1", *mark],
        ["iptables", "-w", "-t", "mangle", "-I", "OUTPUT", "1", *mark],
        ["ip", "-4", "rule", "add", "fwmark", "0x1001/0xffffffff", "table", "1001",
         "priority", "9000"],
        ["ip", "-4", "route", "replace", "default", "dev", "wg0", "table", "1001"],
        ["ip6tables", "-w", "-t", "filter", "-I", "OUTPUT", "1", *nflog],
        ["ip6tables", "-w", "-t", "mangle", "-I", "PREROUTING", "1", *mark6],
        ["ip", "-6", "rule", "add", "fwmark", "0x1001/0xffffffff", "table", "1001",
         "priority", "9000"],
        ["ip", "-6", "route", "replace", "default", "dev", "wg0", "table", "1001"],
    ]  # fmt: skip
    for argv in expect:
        assert argv in runner.calls, argv
    inserts = [c for c in runner.calls if "-I" in c]
    assert len(inserts) == 2 * 2 + 2 * 2  # (udp+tcp NFLOG, 2 mark chains) x 2 families
    items = desired_items(cfg)
    assert IpRule(6, 0x1001, 1001, 9000) in items
    assert TableRoute(4, 1001, "wg0", None) in items
    assert sum(isinstance(i, IptRule) for i in items) == 8


def test_firewall_via_gateway_and_late_interface(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "      interface: wg0\n", "      interface: eth9\n      gateway: 192.0.2.1\n"
    )
    text = text.replace("      table: 1001\n", "      gateway6: 2001:db8::1\n      table: 1001\n")
    _d, _be, runner, cfg = make(tmp_path, text)
    runner.fail_route = True  # eth9 does not exist yet
    fw = Firewall(cfg.firewall, runner=runner)
    fw.apply(cfg)  # must not raise
    route4 = ["ip", "-4", "route", "replace", "default", "via", "192.0.2.1", "dev", "eth9",
              "table", "1001"]  # fmt: skip
    assert route4 in runner.calls
    assert TableRoute(4, 1001, "eth9", "192.0.2.1") in fw.missing
    runner.fail_route = False
    runner.calls.clear()
    fw.reconcile()
    assert route4 in runner.calls and not fw.missing


def test_stale_rules_cleaned_from_iptables_save_output(tmp_path: Path) -> None:
    _d, _be, _r, cfg = make(tmp_path)
    calls: list[list[str]] = []
    listing = (
        "-P OUTPUT ACCEPT\n"
        "-A OUTPUT -p udp -m udp --sport 53 -m comment --comment hrneo:dns -j NFLOG "
        "--nflog-group 100\n"
        '-A OUTPUT -p tcp -m comment --comment "someone else" -j ACCEPT\n'
    )

    def runner(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        calls.append(argv)
        out = ""
        if argv[-1] == "-S" and argv[0] == "iptables" and "filter" in argv:
            out = listing
        if argv[-2:] == ["rule", "show"] and argv[1] == "-4":
            out = "0:\tfrom all lookup local\n9000:\tfrom all fwmark 0x77 lookup 77\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    fw = Firewall(cfg.firewall, runner=runner)
    assert fw.cleanup_stale() == 2
    assert ["iptables", "-w", "-t", "filter", "-D", "OUTPUT", "-p", "udp", "-m", "udp",
            "--sport", "53", "-m", "comment", "--comment", "hrneo:dns", "-j", "NFLOG",
            "--nflog-group", "100"] in calls  # fmt: skip
    assert ["ip", "-4", "rule", "del", "priority", "9000", "fwmark", "0x77", "table",
            "77"] in calls  # fmt: skip
    assert not any("someone else" in c for c in calls if "-D" in c)


def test_policy_of_agrees_with_match_and_batch_counts_repeats(tmp_path: Path) -> None:
    d, be, _r, _ = make(tmp_path)
    wl = d.watchlist
    for name in ("example.org", "a.b.example.org", "www.example.org", "x.www.example.org",
                 "badexample.org", "org", "", "c.example.net"):  # fmt: skip
        m = wl.match(name)
        assert wl.policy_of(name) == (-1 if m is None else m.policy), name
    d.start()
    try:
        # the same question twice in one batch (matched once, counted twice), then a
        # look-alike suffix, then a CNAME chain into a watched name
        d.process(
            [
                Ev("a.example.org", ["a.example.org"], ["192.0.2.60"]),
                Ev("a.example.org", ["a.example.org"], ["192.0.2.61"]),
                Ev("badexample.org", ["badexample.org"], ["192.0.2.62"]),
                Ev("cdn.test", ["cdn.test", "x.example.net"], ["192.0.2.63"]),
            ]
        )
        assert d.pstats["vpn1"].matched == 2 and d.pstats["plain"].matched == 1
        assert {"192.0.2.60", "192.0.2.61"} <= set(be.kernel.members("hr_vpn1"))
        assert "192.0.2.62" not in be.kernel.members("hr_vpn1")
        assert "192.0.2.63" in be.kernel.members("hr_plain")
        assert d.counters["events"] == 4 and d.counters["answers"] == 4
    finally:
        d.stop()


class TrackingFlusher(FakeFlusher):
    """A flusher with an event socket (a pipe): each byte written is one event."""

    def __init__(self) -> None:
        super().__init__()
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        self.polled = 0

    def fileno(self) -> int:
        return self.rfd

    def poll_events(self) -> int:
        try:
            n = len(os.read(self.rfd, 4096))
        except BlockingIOError:
            n = 0
        self.polled += n
        return n

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


def test_loop_drains_the_flusher_event_socket(tmp_path: Path) -> None:
    d, be, _r, cfg = make(tmp_path)
    f = TrackingFlusher()
    be.flusher = f
    assert cfg.conntrack_events is True
    d.start()
    try:
        assert be.flusher_track is True
        os.write(f.wfd, b"eee")
        d.step(max_wait=1.0)
        assert f.polled == 3
        d.step(max_wait=0.0)  # drained: no further call is needed
        assert f.polled == 3
    finally:
        d.stop()
    # After stop the descriptor is out of the selector.
    assert f.rfd not in {k.fd for k in d.sel.get_map().values()}
    f.close()


def test_conntrack_events_off_opens_a_dump_mode_flusher(tmp_path: Path) -> None:
    d, be, _r, _cfg = make(tmp_path, "conntrack_events: false\n" + CONFIG)
    d.start()
    try:
        assert be.flusher_track is False
        assert d._ct_events_fd is None
    finally:
        d.stop()
