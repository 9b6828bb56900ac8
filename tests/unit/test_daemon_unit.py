"""The daemon on a fake core: start, reload, the periodic check, signals,
status, logging. No root needed. What happens to each DNS answer is the
core's pipeline, tested in Rust (rust/pipeline/tests.rs) and against the
kernel (tests/kernel/test_pipeline.py)."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hrneo.backends import PipelineLike, PlanLike
from hrneo.config import Config, load_config
from hrneo.daemon import SUMMARY_INTERVAL, Daemon
from hrneo.errors import DaemonError
from hrneo.firewall import Firewall, desired_items
from hrneo.status import BlindReport, PipelineStats, PolicyCounters, format_status

# ------------------------------------------------------------------ fakes


class FakePlan:
    def __init__(self, cfg: Config, fail: bool = False) -> None:
        self.cfg = cfg
        self.fail = fail
        self.prepared = 0
        self.restored: dict[str, list[tuple[str, int]]] = {}

    def prepare(self) -> list[str]:
        if self.fail:
            raise PermissionError(1, "Operation not permitted")
        self.prepared += 1
        return [f"prepared {p.ipset}" for p in self.cfg.policies]

    def restore(self, state: dict[str, Sequence[tuple[str, int]]]) -> tuple[int, list[str]]:
        self.restored = {k: list(v) for k, v in state.items()}
        return sum(len(v) for v in state.values()), []


def counters(**kw: int) -> PolicyCounters:
    c: PolicyCounters = {
        "matched": 0, "added": 0, "new": 0, "refreshed": 0, "flushed": 0, "errors": 0,
        "v6_dropped": 0, "hint_addresses": 0,
    }  # fmt: skip
    c.update(kw)  # type: ignore[typeddict-item]
    return c


class FakePipeline:
    """Waits like the real one: on `wake_fd` at most `timeout`."""

    def __init__(self, plan: FakePlan, group: int) -> None:
        self.plans = [plan]
        self.groups = [group]
        self.sources: list[tuple[str, int, int]] = []
        self.hold_max: list[int] = []
        self.dns_blind: bool | None = None
        self.fail_swap = False
        self.notes: list[tuple[int, str]] = []
        self.verbose: bool | None = None
        self.closed = False
        self.prepares = 0
        self.policies: dict[str, PolicyCounters] = {}
        self.runs = 0
        self.trusted: list[str] = []
        self.protected: list[str] = []
        self.learned_state: dict[str, list[tuple[str, int]]] = {}

    def run(self, timeout: float, wake_fd: int | None = None) -> str:
        self.runs += 1
        fds = [] if wake_fd is None else [wake_fd]
        ready, _, _ = select.select(fds, [], [], timeout)
        return "wake" if ready else "timeout"

    def process_queued(self) -> int:
        return 0

    def swap_plan(self, plan: PlanLike) -> None:
        assert isinstance(plan, FakePlan)
        self.plans.append(plan)

    def swap_source(self, number: int, *, capture: str = "nflog", hold_max_ms: int = 50) -> None:
        self.groups.append(number)
        self.sources.append((capture, number, hold_max_ms))
        if self.fail_swap:
            raise OSError(16, f"nfqueue {number} is already bound by another process")

    def set_hold_max(self, hold_max_ms: int) -> bool:
        self.hold_max.append(hold_max_ms)
        return True

    def set_dns_blind(self, on: bool) -> None:
        self.dns_blind = on

    def blind_clients(self) -> BlindReport | None:
        if not self.dns_blind:
            return None
        return {"clients": [
            {"client": "192.0.2.5", "connections": 40, "blind": 30, "last_blind": "203.0.113.9"},
            {"client": "192.0.2.6", "connections": 40, "blind": 2, "last_blind": None},
        ], "uncounted": 0}  # fmt: skip

    def why(self, address: str) -> list[Any]:
        return []

    def flushed_for(self, address: str) -> int:
        return 0

    def prepare(self) -> list[str]:
        self.prepares += 1
        return self.plans[-1].prepare()

    def learned(self) -> dict[str, list[tuple[str, int]]]:
        return self.learned_state

    def set_trusted(self, nets: list[str]) -> None:
        self.trusted = nets

    def set_protected(self, nets: list[str]) -> None:
        self.protected = nets

    def set_verbose(self, verbose: bool) -> None:
        self.verbose = verbose

    def take_notes(self) -> list[tuple[int, str]]:
        out, self.notes = self.notes, []
        return out

    def stats(self) -> PipelineStats:
        return {
            "events": 7, "answers": 6, "queries_ignored": 1, "rcode_skipped": 0, "unwatched": 2,
            "malformed": 1, "incomplete": 0, "non_dns": 1, "commit_errors": 0,
            "sets_recreated": 0, "read_errors": 0, "wakeups": 5,
            "untrusted": 0, "udp_dns": 7, "tcp_segments": 0, "tcp_malformed": 0,
            "capture": {"packets": 9, "dropped": 2, "enobufs": 1, "datagrams": 9, "malformed": 1},
            "tcp": {"reassembled": 4, "flows": 1, "gaps": 1, "unfinished": 0, "dropped_bytes": 9},
            "policies": self.policies,
            "conntrack": {"calls": 1, "flushed": 3, "errors": 0, "race_misses": 1, "pending": 0,
                          "tracking": True, "flusher": {}},
        }  # fmt: skip

    def wait_flushed(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class FakeCore:
    def __init__(self) -> None:
        self.pipelines: list[FakePipeline] = []
        self.fail_prepare = False

    def plan(self, cfg: Config) -> PlanLike:
        return FakePlan(cfg, fail=self.fail_prepare)

    def pipeline(self, plan: PlanLike, cfg: Config) -> PipelineLike:
        assert isinstance(plan, FakePlan)
        p = FakePipeline(plan, cfg.nflog_group)
        self.pipelines.append(p)
        return p


class FakeRunner:
    """Records argv; `-C` (check) and `show` find nothing, everything else succeeds."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if "-C" in argv else 0, "", "")


CONFIG = """\
nflog_group: 100
control_socket: {sock}
firewall:
  dns_chains: [OUTPUT]
  recheck_interval: 0
policies:
  - name: vpn1
    ipset: hr_vpn1
    ipset6: hr_vpn1_v6
    timeout: 600
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


def make(tmp_path: Path, text: str = CONFIG) -> tuple[Daemon, FakeCore, FakeRunner, Config]:
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(text).format(sock=tmp_path / "hrneo.sock"))
    cfg, _ = load_config(str(path))
    core = FakeCore()
    runner = FakeRunner()
    d = Daemon(
        cfg,
        core=core,
        firewall=Firewall(cfg.firewall, runner=runner),
        control=False,
        lock_prefix=LOCK,
    )
    return d, core, runner, cfg


# Claims of test daemons never meet a real daemon's, nor another test run's.
LOCK = f"hrneo-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ tests


def test_start_prepares_sets_then_rules_then_pipeline(tmp_path: Path) -> None:
    d, core, runner, cfg = make(tmp_path)
    d.start()
    try:
        (p,) = core.pipelines
        assert p.plans[0].prepared == 1 and p.groups == [100]
        installed = [c for c in runner.calls if "-I" in c or "add" in c or "replace" in c]
        assert len(installed) == len(desired_items(cfg))
        assert p.verbose is False  # INFO: no per-address lines
    finally:
        d.stop()
    assert core.pipelines[0].closed


def test_start_fails_cleanly_when_sets_cannot_be_made(tmp_path: Path) -> None:
    d, core, runner, _ = make(tmp_path)
    core.fail_prepare = True
    with pytest.raises(DaemonError, match=r"sets: .*not permitted"):
        d.start()
    assert core.pipelines == [] and runner.calls == []  # nothing installed


def test_reload_bad_config_keeps_old(tmp_path: Path) -> None:
    d, core, _r, cfg = make(tmp_path)
    d.start()
    try:
        Path(cfg.path).write_text("policies:\n  - name: p\n    ipset: s\n    tiemout: 5\n")
        assert d.reload() is False
        assert d.config is cfg
        assert d.last_reload is not None and d.last_reload["ok"] is False
        assert ":4:" in d.last_reload["message"] and "tiemout" in d.last_reload["message"]
        assert len(core.pipelines[0].plans) == 1  # the running plan stays
    finally:
        d.stop()


def test_reload_whose_sets_fail_keeps_old(tmp_path: Path) -> None:
    d, core, _r, cfg = make(tmp_path)
    d.start()
    try:
        core.fail_prepare = True
        assert d.reload() is False
        assert d.config is cfg and len(core.pipelines[0].plans) == 1
        assert d.last_reload is not None and "keeping the old config" in d.last_reload["message"]
    finally:
        d.stop()


def test_reload_applies_difference(tmp_path: Path) -> None:
    d, core, runner, cfg = make(tmp_path)
    d.start()
    try:
        text = Path(cfg.path).read_text()
        # drop vpn1's route, add a policy with its own set, read another nflog group
        text = text.replace(
            "    route:\n      interface: wg0\n      table: 1001\n      mark: 0x1001\n", ""
        )
        text = text.replace("nflog_group: 100", "nflog_group: 101")
        text += "  - name: extra\n    ipset: hr_extra\n    domains: [example.com]\n"
        Path(cfg.path).write_text(text)
        runner.calls.clear()
        assert d.reload() is True
        p = core.pipelines[0]
        assert len(p.plans) == 2 and p.plans[1].prepared == 1
        assert [pol.name for pol in p.plans[1].cfg.policies] == ["vpn1", "plain", "extra"]
        assert p.groups == [100, 101]
        removed = [c for c in runner.calls if "-D" in c or "del" in c]
        assert ["iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-m", "set",
                "--match-set", "hr_vpn1", "dst", "-m", "comment", "--comment", "hrneo:vpn1",
                "-j", "MARK", "--set-xmark", "0x1001/0xffffffff"] in removed  # fmt: skip
        assert ["ip", "-4", "rule", "del", "fwmark", "0x1001/0xffffffff", "table", "1001",
                "priority", "9000"] in removed  # fmt: skip
        assert any("--nflog-group" in c and "100" in c for c in removed)  # the old group's rule
        assert d.config.watchlist.match("www.example.com") is not None
    finally:
        d.stop()


def test_stop_removes_everything_installed(tmp_path: Path) -> None:
    d, core, runner, cfg = make(tmp_path)
    d.start()
    installed = [c for c in runner.calls if "-I" in c or "add" in c or "replace" in c]
    runner.calls.clear()
    d.stop()
    removed = [c for c in runner.calls if "-D" in c or "del" in c]
    assert len(removed) == len(installed) == len(desired_items(cfg))
    assert d.firewall.items == [] and core.pipelines[0].closed


def test_run_handles_real_signals(tmp_path: Path) -> None:
    d, core, _r, _cfg = make(tmp_path)
    pid = os.getpid()
    timers = [
        threading.Timer(0.3, os.kill, (pid, signal.SIGHUP)),
        threading.Timer(0.6, os.kill, (pid, signal.SIGUSR1)),
        threading.Timer(0.9, os.kill, (pid, signal.SIGTERM)),
    ]
    for t in timers:
        t.start()
    try:
        assert d.run() == 0
    finally:
        for t in timers:
            t.cancel()
    assert d.last_reload is not None and d.last_reload["ok"] is True
    p = core.pipelines[0]
    assert p.prepares == 1, "SIGUSR1 checks the sets at once"
    assert p.closed and d.firewall.items == []
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_notes_are_logged_at_their_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d, core, _r, _ = make(tmp_path)
    d.start()
    try:
        core.pipelines[0].notes = [(logging.ERROR, "set hr_vpn1: boom"), (logging.DEBUG, "vpn1 +x")]
        with caplog.at_level(logging.DEBUG, logger="hrneo.daemon"):
            d.step(max_wait=0.0)
        got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "hrneo.daemon"]
        assert (logging.ERROR, "set hr_vpn1: boom") in got
        assert (logging.DEBUG, "vpn1 +x") in got
    finally:
        d.stop()


def test_verbose_pipeline_at_debug(tmp_path: Path) -> None:
    d, core, _r, _ = make(tmp_path)
    logger = logging.getLogger("hrneo.daemon")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        d.start()
        assert core.pipelines[0].verbose is True
    finally:
        logger.setLevel(old)
        d.stop()


def test_status_reports_pipeline_and_policies(tmp_path: Path) -> None:
    d, core, _r, _ = make(tmp_path)
    d.start()
    try:
        core.pipelines[0].policies = {"vpn1": counters(matched=3, new=2, flushed=3)}
        st = d.status()
        assert (st["events"], st["answers"], st["dropped"], st["malformed"]) == (7, 6, 2, 2)
        assert (st["flushed"], st["race_misses"], st["flush_pending"]) == (3, 1, 0)
        assert (st["tcp"]["reassembled"], st["tcp"]["gaps"]) == (4, 1)
        assert core.pipelines[0].dns_blind is True
        blind = st["dns_blind"]
        assert blind is not None
        assert [(c["client"], c["likely"], c["share"]) for c in blind["clients"]] == [
            ("192.0.2.5", True, 0.75), ("192.0.2.6", False, 0.05),
        ]  # fmt: skip
        assert "DNS-blind client 192.0.2.5: 30 of 40" in format_status(dict(st))
        vpn1, plain = st["policies"]
        assert (vpn1["name"], vpn1["domains"], vpn1["matched"], vpn1["new"]) == ("vpn1", 1, 3, 2)
        assert (plain["name"], plain["domains"], plain["matched"]) == ("plain", 2, 0)
        assert d.command("nonsense") == {"error": "unknown command 'nonsense'"}
        # The fake runner finds no rule in place: the check puts every one back.
        assert d.command("recheck") == {"reinstalled": len(desired_items(d.config))}
    finally:
        d.stop()


def test_summary_logs_what_moved(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d, core, _r, _ = make(tmp_path)
    d.start()
    try:
        p = core.pipelines[0]
        p.policies = {"vpn1": counters(new=4, refreshed=2), "plain": counters()}
        d._summary_t -= SUMMARY_INTERVAL
        with caplog.at_level(logging.INFO, logger="hrneo.daemon"):
            d.step(max_wait=0.0)
            p.policies = {"vpn1": counters(new=5, refreshed=2, flushed=3), "plain": counters()}
            d._summary_t -= SUMMARY_INTERVAL
            d.step(max_wait=0.0)
        lines = [
            r.getMessage() for r in caplog.records if "conntrack entries flushed" in r.getMessage()
        ]
        assert lines == [
            "vpn1: 4 new, 2 refreshed, 0 conntrack entries flushed, 0 errors",
            "vpn1: 1 new, 0 refreshed, 3 conntrack entries flushed, 0 errors",
        ]
    finally:
        d.stop()


def test_periodic_check_reinstalls_rules_and_prepares_sets(tmp_path: Path) -> None:
    d, core, runner, _ = make(
        tmp_path, CONFIG.replace("recheck_interval: 0", "recheck_interval: 5")
    )
    d.start()
    try:
        runner.calls.clear()
        d._next_recheck = 0.0
        d.step(max_wait=0.0)
        assert core.pipelines[0].prepares == 1
        assert any("-C" in c for c in runner.calls)
        assert d.counters["reconciled"] == len(desired_items(d.config))
    finally:
        d.stop()


def test_step_returns_for_the_control_socket(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.yaml"
    path.write_text(CONFIG.format(sock=tmp_path / "hrneo.sock"))
    cfg, _ = load_config(str(path))
    core = FakeCore()
    d = Daemon(
        cfg, core=core, firewall=Firewall(cfg.firewall, runner=FakeRunner()), lock_prefix=LOCK
    )
    d.start()
    try:
        from hrneo.control import request

        reply: list[Any] = []
        t = threading.Thread(target=lambda: reply.append(request(str(tmp_path / "hrneo.sock"))))
        t.start()
        for _ in range(20):
            d.step(max_wait=0.5)
            if reply:
                break
        t.join(5)
        assert reply and reply[0]["policies"][0]["name"] == "vpn1"
    finally:
        d.stop()
