"""The daemon against faults, on the fakes of test_daemon_unit: a second
daemon refused without touching the first one's rules, bad configs on reload,
out-of-descriptor errors in the loop, the order of the periodic check."""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import threading
from pathlib import Path

import pytest
from hrneo.config import load_config
from hrneo.daemon import Daemon
from hrneo.errors import DaemonError
from hrneo.firewall import Firewall
from hrneo.instance import InstanceLock, other_daemons
from test_daemon_unit import CONFIG, LOCK, FakeCore, FakeRunner, make


def test_second_daemon_on_the_same_group_touches_nothing(tmp_path: Path) -> None:
    d1, _core1, _runner1, cfg = make(tmp_path)
    d1.start()
    try:
        core2, runner2 = FakeCore(), FakeRunner()
        d2 = Daemon(cfg, core=core2, firewall=Firewall(cfg.firewall, runner=runner2),
                    control=False, lock_prefix=LOCK)  # fmt: skip
        with pytest.raises(DaemonError, match=f"pid {os.getpid()}.*nflog group 100"):
            d2.start()
        d2.stop()
        # no set prepared, no program run, no rule removed: not even a stale-rule sweep
        assert core2.pipelines == [] and runner2.calls == []
        assert d1.firewall.items and not d1.firewall.missing
    finally:
        d1.stop()
    # once the first is gone, a new one may start
    d3, _c, _r, _ = make(tmp_path)
    d3.start()
    d3.stop()


def test_second_daemon_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.yaml"
    path.write_text(CONFIG.format(sock=tmp_path / "hrneo.sock"))
    cfg, _ = load_config(str(path))
    d1 = Daemon(cfg, core=FakeCore(), firewall=Firewall(cfg.firewall, runner=FakeRunner()),
                lock_prefix=LOCK)  # fmt: skip
    d1.start()
    try:
        other = dataclasses.replace(cfg, nflog_group=101)
        runner2 = FakeRunner()
        d2 = Daemon(other, core=FakeCore(), firewall=Firewall(cfg.firewall, runner=runner2),
                    lock_prefix=LOCK)  # fmt: skip
        with pytest.raises(DaemonError, match="control socket"):
            d2.start()
        d2.stop()
        assert runner2.calls == []
        assert (tmp_path / "hrneo.sock").exists()  # the first one's socket stays
    finally:
        d1.stop()


def test_stale_rules_are_kept_while_another_daemon_lives(tmp_path: Path) -> None:
    d1, _c, _r, _cfg = make(tmp_path)
    d1.start()
    try:
        (tmp_path / "two").mkdir()
        text = CONFIG.replace("nflog_group: 100", "nflog_group: 101")
        d2, _c2, runner2, _ = make(tmp_path / "two", text)
        d2.start()
        try:
            assert not any(c[-1] == "-S" for c in runner2.calls)  # no sweep for stale rules
            assert d2.lock.others() == [f"{LOCK}/nflog/100"]
        finally:
            d2.stop()
    finally:
        d1.stop()
    d3, _c3, runner3, _ = make(tmp_path)
    d3.start()
    d3.stop()
    assert any(c[-1] == "-S" for c in runner3.calls)  # alone: leftovers are cleaned


def test_instance_lock_is_released_by_death_and_release(tmp_path: Path) -> None:
    a = InstanceLock(5, str(tmp_path / "s.sock"), prefix=LOCK)
    a.acquire()
    assert other_daemons(LOCK) == [f"{LOCK}/nflog/5"]
    b = InstanceLock(6, str(tmp_path / "s.sock"), prefix=LOCK)
    with pytest.raises(DaemonError, match="control socket"):
        b.acquire()
    assert other_daemons(LOCK) == [f"{LOCK}/nflog/5"]  # b gave its group back
    a.release()
    b.acquire()
    b.release()
    # a process that dies holding the claims frees them with no clean-up
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            InstanceLock(5, str(tmp_path / "s.sock"), prefix=LOCK).acquire()
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    a.acquire()
    a.release()


# ------------------------------------------------------------------ reload


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kind", ["nested", "python tag", "unknown tag", "dev/zero", "fifo", "directory", "huge",
             "binary", "nan"],
)  # fmt: skip
def test_sighup_with_a_bad_config_keeps_the_old_one(tmp_path: Path, kind: str) -> None:
    d, core, _r, cfg = make(tmp_path)
    d.start()
    try:
        path = Path(cfg.path)
        base = path.read_text()
        target = ""
        if kind == "fifo":
            os.mkfifo(tmp_path / "fifo")
            target = str(tmp_path / "fifo")
        elif kind == "directory":
            target = str(tmp_path)
        elif kind == "dev/zero":
            target = "/dev/zero"
        elif kind == "huge":
            with open(tmp_path / "huge.list", "wb") as f:
                f.truncate(65 * 1024 * 1024)
            target = str(tmp_path / "huge.list")
        elif kind == "binary":
            (tmp_path / "bin.list").write_bytes(os.urandom(200_000))
            target = str(tmp_path / "bin.list")
        text = {
            "nested": base + "x: " + "[" * 4000 + "]" * 4000 + "\n",
            "python tag": base.replace("nflog_group: 100",
                                       "nflog_group: !!python/object/apply:os.getpid []"),
            "unknown tag": base.replace("timeout: 600", "timeout: !secret 600"),
            "nan": base.replace("recheck_interval: 0", "recheck_interval: .nan"),
        }.get(kind, base.replace(
            "    domains: [example.org]\n",
            f"    domains: [example.org]\n    domain_files: [{target}]\n",
        ))  # fmt: skip
        path.write_text(text)
        assert d.reload() is False
        assert d.config is cfg
        assert d.last_reload is not None
        message = d.last_reload["message"]
        assert f"{path}:" in message or target in message
        assert len(core.pipelines[0].plans) == 1
    finally:
        d.stop()


def test_a_loader_bug_keeps_the_old_config(tmp_path: Path) -> None:
    d, _core, _r, cfg = make(tmp_path)

    def broken(path: str) -> tuple[object, list[str]]:
        raise RecursionError("maximum recursion depth exceeded")

    d.loader = broken  # type: ignore[assignment]
    d.start()
    try:
        assert d.reload() is False and d.config is cfg
        assert d.last_reload is not None and "RecursionError" in d.last_reload["message"]
    finally:
        d.stop()


# ------------------------------------------------------------------ the loop


def test_running_out_of_descriptors_in_the_loop_is_survived(tmp_path: Path) -> None:
    d, core, _r, _cfg = make(tmp_path)
    turns = {"n": 0}
    real_step = d.step

    def step(max_wait: float = 1.0) -> None:
        turns["n"] += 1
        if turns["n"] <= 3:
            raise OSError(errno.EMFILE, "Too many open files")
        if turns["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        real_step(max_wait=0.05)

    d.step = step  # type: ignore[method-assign]
    timer = threading.Timer(10, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert d.run() == 0
    finally:
        timer.cancel()
    assert turns["n"] >= 4 and core.pipelines[0].closed


def test_other_errors_in_the_loop_still_stop_it(tmp_path: Path) -> None:
    d, core, _r, _cfg = make(tmp_path)

    def step(max_wait: float = 1.0) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    d.step = step  # type: ignore[method-assign]
    with pytest.raises(OSError, match="Bad file descriptor"):
        d.run()
    assert core.pipelines[0].closed and d.firewall.items == []


def test_recheck_prepares_sets_before_rules(tmp_path: Path) -> None:
    d, core, _runner, _cfg = make(tmp_path)
    d.start()
    try:
        order: list[str] = []
        p = core.pipelines[0]
        real_prepare = p.prepare

        def prepare() -> list[str]:
            order.append("sets")
            return real_prepare()

        p.prepare = prepare  # type: ignore[method-assign]
        real_run = d.firewall.run

        def run(argv: list[str]) -> object:
            order.append("rules")
            return real_run(argv)

        d.firewall.run = run  # type: ignore[assignment]
        d.recheck()
        assert order[0] == "sets" and "rules" in order
    finally:
        d.stop()


def test_reload_to_another_group_claims_it_first(tmp_path: Path) -> None:
    d, core, _r, cfg = make(tmp_path)
    d.start()
    holder = InstanceLock(101, None, prefix=LOCK)  # another daemon reads group 101
    holder.acquire()
    try:
        path = Path(cfg.path)
        path.write_text(path.read_text().replace("nflog_group: 100", "nflog_group: 101"))
        assert d.reload() is False and d.config is cfg
        assert d.last_reload is not None and "nflog group 101" in d.last_reload["message"]
        assert core.pipelines[0].groups == [100]
        holder.release()
        path.write_text(path.read_text().replace("nflog_group: 101", "nflog_group: 102"))
        assert d.reload() is True and core.pipelines[0].groups == [100, 102]
        assert other_daemons(LOCK) == [f"{LOCK}/nflog/102"]  # 100 given back
    finally:
        holder.release()
        d.stop()
    assert other_daemons(LOCK) == []
