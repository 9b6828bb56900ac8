"""Shared by the test_import*.py files: fixtures path, round trip through the loader."""

from __future__ import annotations

from pathlib import Path

import yaml
from hrneo.config import load_config
from hrneo.importer import ImportResult, render

FIX = Path(__file__).parents[1] / "fixtures" / "import"


def roundtrip(tmp_path: Path, res: ImportResult) -> dict[str, object]:
    """The rendered YAML must load with hrneo's own loader; returns it parsed."""
    text = render(res, "test")
    cfg = tmp_path / "imported.yaml"
    cfg.write_text(text)
    loaded, _ = load_config(str(cfg))
    assert [p.name for p in loaded.policies] == [p.name for p in res.policies]
    for lp, ip in zip(loaded.policies, res.policies):
        assert list(lp.domains) == list(ip.domains)
        assert list(lp.static) == list(ip.static)
        assert list(lp.domain_urls) == list(ip.domain_urls)
        assert (lp.ipset, lp.ipset6, lp.timeout, lp.reconnect, lp.maxelem) == (
            ip.ipset, ip.ipset6, ip.timeout, ip.reconnect, ip.maxelem,
        )  # fmt: skip
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def no_net(tmp_path: Path) -> str:
    """An empty stand-in for /sys/class/net: no target is an interface."""
    d = tmp_path / "net"
    d.mkdir(exist_ok=True)
    return str(d)


def warnings_about(res: ImportResult, text: str) -> list[str]:
    """The warnings that contain `text`."""
    return [w for w in res.warnings if text in w]
