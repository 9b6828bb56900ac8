"""DNS-blind counting on the Python side: the key, and what status reports (the
core's counting has its Rust tests, the kernel's events an end-to-end test)."""

from __future__ import annotations

from pathlib import Path

from hrneo.config import load_config
from test_daemon_unit import CONFIG, make


def test_on_by_default_and_off_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "on.yaml"
    path.write_text(CONFIG.format(sock=tmp_path / "s.sock"))
    assert load_config(str(path))[0].dns_blind is True
    d, core, _r, _cfg = make(tmp_path, "dns_blind: false\n" + CONFIG)
    d.start()
    try:
        assert core.pipelines[0].dns_blind is False
        assert d.status()["dns_blind"] is None
    finally:
        d.stop()
