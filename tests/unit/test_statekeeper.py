"""When the daemon writes its state file (only when something changed), how it
restores it at start, and the config keys `state_file` and `state_interval`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hrneo.config import load_config
from hrneo.errors import ConfigError
from hrneo.statefile import Clock, encode, write_atomic
from hrneo.statekeeper import StateKeeper, config_sets
from test_daemon_unit import CONFIG, make

CFG = """\
state_file: {state}
state_interval: 300
policies:
  - name: vpn
    ipset: hr_vpn
    ipset6: hr_vpn6
    timeout: 600
    domains: [example.org]
  - name: keep
    ipset: hr_keep
    timeout: 0
    domains: [example.net]
"""


class Lister:
    def __init__(self) -> None:
        self.state: dict[str, list[tuple[str, int]]] = {"hr_vpn": [], "hr_vpn6": [], "hr_keep": []}

    def learned(self) -> dict[str, list[tuple[str, int]]]:
        return {k: list(v) for k, v in self.state.items()}

    def drift(self, seconds: int) -> None:
        """Every countdown runs on, nothing learned."""
        self.state = {
            k: [(e, t - seconds) for e, t in v if t > seconds] for k, v in self.state.items()
        }


class Restorer:
    def __init__(self) -> None:
        self.got: dict[str, list[tuple[str, int]]] | None = None

    def restore(self, state: dict[str, Sequence[tuple[str, int]]]) -> tuple[int, list[str]]:
        self.got = {k: list(v) for k, v in state.items()}
        return sum(len(v) for v in state.values()), ["set hr_vpn6: refused one"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The keeper's monotonic clock, moved by the test."""
    now = [1000.0]
    monkeypatch.setattr("hrneo.statekeeper.time.monotonic", lambda: now[0])
    return now


def keeper(tmp_path: Path, text: str = CFG) -> tuple[StateKeeper, Path]:
    state = tmp_path / "state.json"
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(text.format(state=state))
    cfg, _ = load_config(str(conf))
    return StateKeeper(cfg, "ipset"), state


def test_written_only_when_something_was_learned_or_refreshed(
    tmp_path: Path, clock: list[float]
) -> None:
    k, state = keeper(tmp_path)
    src = Lister()
    assert k.restore(Restorer()) == 0  # no file yet: one is owed
    clock[0] += 300
    assert k.due(clock[0])
    assert k.save(src, final=True) and state.exists()
    assert json.loads(state.read_text())["sets"] == {"hr_keep": [], "hr_vpn": [], "hr_vpn6": []}
    # Nothing happened: no write.
    clock[0] += 300
    assert not k.save(src, final=True)
    # Learned 10 s ago: written.
    src.state["hr_vpn"] = [("192.0.2.1", 590), ("192.0.2.2", 100)]
    clock[0] += 300
    assert k.save(src, final=True)
    assert json.loads(state.read_text())["sets"]["hr_vpn"] == [
        ["192.0.2.1", 590],
        ["192.0.2.2", 100],
    ]
    # The countdowns ran on, and one expired: the file still tells the truth.
    src.drift(300)
    clock[0] += 300
    assert not k.save(src, final=True)
    # A refresh (the countdown restarted) is a change, in either set.
    src.state["hr_vpn6"] = [("2001:db8::1", 595)]
    clock[0] += 300
    assert k.save(src, final=True)
    assert k.writes == 3
    # Looks in a thread of their own, unless at stop.
    src.drift(300)
    src.state["hr_vpn"].append(("192.0.2.3", 590))
    clock[0] += 300
    assert k.save(src)
    k.wait(10)
    assert k.writes == 4 and "192.0.2.3" in state.read_text()
    src.drift(300)
    clock[0] += 300
    assert k.save(src)  # a look, which writes nothing
    k.wait(10)
    assert k.writes == 4


def test_the_timeout_of_a_set_decides_what_is_fresh(tmp_path: Path, clock: list[float]) -> None:
    k, _ = keeper(tmp_path)
    assert k.sets["hr_vpn"].timeout == 600
    # 600 - 300 (since the last look) - 2: 298 is fresh, 297 is not.
    assert k.changed({"hr_vpn": [("192.0.2.1", 298)]}, 300.0)
    assert not k.changed({"hr_vpn": [("192.0.2.1", 297)]}, 300.0)
    # Sets the config does not have (or of timeout 0) say nothing.
    assert not k.changed({"hr_gone": [("192.0.2.1", 600)], "hr_keep": []}, 300.0)


def test_restore_at_start_and_a_good_file_is_not_rewritten(
    tmp_path: Path, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    k, state = keeper(tmp_path)
    now = time.time()
    saved = {
        "hr_vpn": [("192.0.2.1", 600), ("192.0.2.2", 5), ("2001:db8::1", 600)],
        "hr_old": [("192.0.2.3", 600)],
    }
    write_atomic(str(state), encode(saved, Clock(now - 10, "another-boot", 1.0)))
    target = Restorer()
    assert k.restore(target) == 1
    assert target.got is not None and list(target.got) == ["hr_vpn"]
    (entry, left) = target.got["hr_vpn"][0]
    assert entry == "192.0.2.1" and 588 <= left <= 590
    assert "1 learned addresses restored" in caplog.text
    assert (
        "1 expired" in caplog.text and "1 of sets no longer in the config (hr_old)" in caplog.text
    )
    assert "1 of the wrong family" in caplog.text
    assert "set hr_vpn6: refused one" in caplog.text
    # Restored, nothing new since: the file stays as it is.
    before = state.read_bytes()
    clock[0] += 300
    assert not k.save(Lister(), final=True)
    assert state.read_bytes() == before


def test_a_corrupt_file_is_logged_and_replaced(
    tmp_path: Path, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    k, state = keeper(tmp_path)
    state.write_text('{"format": "hrneo-state", "version": 1, "sets": {"hr_vpn": [[')
    assert k.restore(Restorer()) == 0
    assert f"state file {state} ignored: not JSON" in caplog.text
    clock[0] += 300
    assert k.save(Lister(), final=True)
    assert json.loads(state.read_text())["format"] == "hrneo-state"


def test_failures_are_logged_rate_limited_never_raised(
    tmp_path: Path, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    k, _ = keeper(tmp_path, CFG.replace("{state}", str(blocker / "state.json")))
    k.restore(Restorer())
    for _ in range(3):
        clock[0] += 300
        assert not k.save(Lister(), final=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "hrneo.statekeeper"]
    assert len(lines) == 1 and "learned addresses not saved" in lines[0], lines
    assert f"File exists ({blocker})" in lines[0]
    clock[0] += 3600
    k.save(Lister(), final=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "hrneo.statekeeper"]
    assert len(lines) == 2 and "(2 more failures since the last line)" in lines[1], lines
    # The listing failing is the same kind of failure.

    class Broken:
        def learned(self) -> dict[str, list[tuple[str, int]]]:
            raise OSError(105, "No buffer space available")

    clock[0] += 3600
    assert not k.save(Broken(), final=True)
    assert "listing the sets" in caplog.records[-1].getMessage()


def test_reload_switches_path_and_interval(tmp_path: Path, clock: list[float]) -> None:
    k, _ = keeper(tmp_path)
    k.restore(Restorer())
    clock[0] += 300
    assert k.save(Lister(), final=True)
    other = tmp_path / "elsewhere" / "state.json"
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CFG.format(state=other).replace("state_interval: 300", "state_interval: 0"))
    k.update(load_config(str(conf))[0])
    assert not k.due(clock[0] + 10**6)  # 0: at stop only
    assert k.save(Lister(), final=True)  # a new path is owed a write
    assert other.exists()
    conf.write_text(CFG.format(state="null"))
    k.update(load_config(str(conf))[0])
    assert not k.save(Lister(), final=True)


def test_daemon_restores_at_start_writes_when_due_and_at_stop(tmp_path: Path) -> None:
    d, core, _, cfg = make(tmp_path, CONFIG)
    assert cfg.state_file is not None
    write_atomic(
        cfg.state_file,
        encode({"hr_vpn1": [("192.0.2.7", 500)]}, Clock(time.time(), "another-boot", 1.0)),
    )
    d.start()
    try:
        plan = core.pipelines[0].plans[0]
        assert plan.restored["hr_vpn1"][0][0] == "192.0.2.7"
        p = core.pipelines[0]
        p.learned_state = {"hr_vpn1": [("192.0.2.8", 600)]}
        d.state._next = 0.0  # due now
        d.step(max_wait=0.0)
        d.state.wait(10)
        assert "192.0.2.8" in Path(cfg.state_file).read_text()
        p.learned_state = {"hr_vpn1": [("192.0.2.9", 600)]}
    finally:
        d.stop()
    assert "192.0.2.9" in Path(cfg.state_file).read_text()


def test_set_names_per_backend(tmp_path: Path) -> None:
    keeper(tmp_path)
    cfg, _ = load_config(str(tmp_path / "hrneo.yaml"))
    assert sorted(config_sets(cfg, "ipset")) == ["hr_keep", "hr_vpn", "hr_vpn6"]
    sets = config_sets(cfg, "nftables")
    assert sets["inet#hrneo#hr_vpn6"].version == 6 and sets["inet#hrneo#hr_vpn"].timeout == 600


def test_config_keys(tmp_path: Path) -> None:
    conf = tmp_path / "hrneo.yaml"
    base = "policies:\n  - {name: vpn, ipset: hr_vpn, domains: [example.org]}\n"
    conf.write_text(base)
    cfg, _ = load_config(str(conf))
    assert cfg.state_interval == 300
    assert cfg.state_file == str(tmp_path / "state.json")  # tests/conftest.py's default
    conf.write_text("state_file: null\n" + base)
    assert load_config(str(conf))[0].state_file is None
    conf.write_text("state_file: run/state.json\nstate_interval: 0\n" + base)
    cfg, _ = load_config(str(conf))
    assert (cfg.state_file, cfg.state_interval) == (str(tmp_path / "run/state.json"), 0)
    for bad, why in (
        ("state_interval: 10", "10 is out of range 60..86400"),
        ("state_interval: 90000", "90000 is out of range"),
        ("state_interval: 1.5", "expected a whole number"),
        ("state_file: 7", "expected a path"),
        ("state_file: [a]", "state_file must be a single value"),
    ):
        conf.write_text(f"{bad}\n" + base)
        with pytest.raises(ConfigError) as e:
            load_config(str(conf))
        assert f"{conf}:1: " in e.value.errors[0] and why in e.value.errors[0], e.value.errors
