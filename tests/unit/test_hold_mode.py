"""Hold mode on the Python side: the config keys, the NFQUEUE capture rules,
the daemon's claim, reload and status (the kernel tests drive the queue itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hrneo.config import load_config
from hrneo.errors import ConfigError
from hrneo.firewall import IptRule, desired_items
from hrneo.instance import InstanceLock, other_daemons
from hrneo.status import format_prometheus, format_status
from test_daemon_unit import CONFIG, LOCK, make

HOLD = CONFIG.replace("nflog_group: 100", "capture: nfqueue\nnfqueue_num: 200\nhold_max_ms: 80")


def config_text(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hrneo.yaml"
    p.write_text(text.format(sock=tmp_path / "hrneo.sock"))
    return p


def test_defaults_are_passive_capture(tmp_path: Path) -> None:
    cfg, _ = load_config(str(config_text(tmp_path, CONFIG)))
    assert (cfg.capture, cfg.nfqueue_num, cfg.hold_max_ms) == ("nflog", 100, 50)
    assert cfg.capture_number == 100


def test_hold_mode_keys(tmp_path: Path) -> None:
    cfg, _ = load_config(str(config_text(tmp_path, HOLD)))
    assert (cfg.capture, cfg.nfqueue_num, cfg.hold_max_ms, cfg.capture_number) == (
        "nfqueue", 200, 80, 200,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("capture: nfq", "capture: expected one of nflog, nfqueue, not 'nfq'"),
        ("capture: [nflog]", "capture must be a single value"),
        ("nfqueue_num: 70000", "nfqueue_num: 70000 is out of range 0..65535"),
        ("hold_max_ms: 0", "hold_max_ms: 0 is out of range 1..60000"),
        ("hold_max_ms: 61000", "hold_max_ms: 61000 is out of range 1..60000"),
        ("hold_max_ms: fast", "hold_max_ms: expected a whole number"),
    ],
)
def test_bad_hold_keys_name_file_line_and_value(tmp_path: Path, line: str, message: str) -> None:
    p = config_text(tmp_path, line + "\n" + CONFIG)
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert any(err.startswith(f"{p}:1:") and message in err for err in e.value.errors), e.value


def test_capture_rules_jump_to_the_queue_with_bypass(tmp_path: Path) -> None:
    cfg, _ = load_config(str(config_text(tmp_path, HOLD)))
    capture = [i for i in desired_items(cfg) if isinstance(i, IptRule) and i.essential]
    assert len(capture) == 4  # udp and tcp, IPv4 and IPv6, in OUTPUT
    for rule in capture:
        assert rule.spec[-5:] == ("-j", "NFQUEUE", "--queue-num", "200", "--queue-bypass")
        assert "NFLOG" not in rule.spec
        assert "--ctstate" in rule.spec, "answers still checked against conntrack"


def test_a_hold_daemon_claims_its_queue_and_reports_hold(tmp_path: Path) -> None:
    d, _core, _r, _cfg = make(tmp_path, HOLD)
    d.start()
    try:
        assert other_daemons(LOCK) == [f"{LOCK}/nfqueue/200"]
        # Queue 200 and nflog group 200 are different things: both can be claimed.
        other = InstanceLock(200, None, prefix=LOCK)
        other.acquire()
        other.release()
        st = d.status()
        assert (st["capture_mode"], st["nfqueue_num"]) == ("nfqueue", 200)
        text = format_status(dict(st))
        assert "nfqueue 200 (hold)" in text
    finally:
        d.stop()


def test_reload_between_modes_swaps_the_source(tmp_path: Path) -> None:
    d, core, _r, cfg = make(tmp_path)
    d.start()
    try:
        path = Path(cfg.path)
        path.write_text(path.read_text().replace("nflog_group: 100", "capture: nfqueue"))
        assert d.reload() is True
        assert core.pipelines[0].sources == [("nfqueue", 100, 50)]
        assert other_daemons(LOCK) == [f"{LOCK}/nfqueue/100"]
        # Only the deadline changes: the same socket, a new deadline.
        path.write_text(path.read_text() + "hold_max_ms: 20\n")
        assert d.reload() is True
        assert core.pipelines[0].sources == [("nfqueue", 100, 50)]
        assert core.pipelines[0].hold_max == [20]
        # A change that does not touch the capture keeps the socket.
        path.write_text(path.read_text().replace("timeout: 600", "timeout: 700"))
        assert d.reload() is True and len(core.pipelines[0].sources) == 1
        path.write_text(path.read_text().replace("capture: nfqueue", "nflog_group: 100"))
        assert d.reload() is True
        assert core.pipelines[0].sources[-1][:2] == ("nflog", 100)
    finally:
        d.stop()


def test_a_capture_that_cannot_be_bound_rejects_the_reload(tmp_path: Path) -> None:
    d, core, runner, cfg = make(tmp_path)
    d.start()
    try:
        pipeline = core.pipelines[0]
        pipeline.fail_swap = True
        calls = len(runner.calls)
        path = Path(cfg.path)
        path.write_text(path.read_text().replace("nflog_group: 100", "capture: nfqueue"))
        assert d.reload() is False and d.config is cfg
        assert d.last_reload is not None and "already bound" in d.last_reload["message"]
        assert len(runner.calls) == calls, "no rule touched"
        assert pipeline.plans == pipeline.plans[:1], "the old plan kept"
        assert other_daemons(LOCK) == [f"{LOCK}/nflog/100"], "the old claim kept"
    finally:
        d.stop()


def test_hold_counters_in_status_and_metrics() -> None:
    st = {
        "capture_mode": "nfqueue", "nfqueue_num": 7,
        "hold": {"held": 10, "released": 9, "outstanding": 1, "timeouts": 2, "fail_opens": 3,
                 "verdict_errors": 0, "p50_us": 40, "p99_us": 900, "max_us": 5000},
    }  # fmt: skip
    text = format_status(st)
    assert "hold p50 40 us  p99 900 us" in text and "fail-opens 3" in text
    prom = format_prometheus(st)
    assert "hrneo_hold_timeouts_total 2" in prom
    assert "hrneo_hold_fail_opens_total 3" in prom
    assert "hrneo_hold_p99_microseconds 900" in prom
    # nflog: the hold families are 0, the status has no hold line.
    assert "held" not in format_status({"capture_mode": "nflog", "hold": None})
