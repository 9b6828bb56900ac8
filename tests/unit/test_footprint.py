"""Small routers: PyYAML without libyaml, the smallest Python OpenWrt and Entware
ship (python3-light + python3-logging + python3-yaml), and commands that import
only what they need. The daemon on that Python: tests/kernel/test_light_python.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightpython
import pytest
import yaml
from hrneo import cli
from hrneo.config import DEFAULT_CONFIG_PATH, DEFAULT_SOCKET_PATH, ConfigError, load_config
from test_replay import CONFIG as REPLAY_CONFIG
from test_replay import FORMATS, frames

ROOT = Path(__file__).parents[2]

CONFIG = """\
policies:
  - name: vpn
    ipset: hr_vpn
    domains: [example.org, "*.wild.example"]
    domain_files: [vpn.list]
"""


def write(tmp_path: Path) -> Path:
    (tmp_path / "vpn.list").write_text("# list\nexample.net\nxn--bcher-kva.example\n")
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG)
    return conf


def test_pure_python_yaml_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = write(tmp_path)
    with_c = load_config(str(conf)) if hasattr(yaml, "CSafeLoader") else None
    used: list[str] = []

    from hrneo.config import reader

    class SpyLoader(reader._BoundedLoader):
        def __init__(self, stream: str) -> None:
            used.append("pure")
            super().__init__(stream)

    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)  # PyYAML built without libyaml
    monkeypatch.setattr(reader, "_BoundedLoader", SpyLoader)
    cfg, warnings = load_config(str(conf))
    assert used == ["pure"]
    assert [p.domains for p in cfg.policies] == [
        ("example.org", "wild.example", "example.net", "xn--bcher-kva.example")
    ]
    wild = f"{conf}:4: leading '*.' stripped from '*.wild.example': a domain always matches"
    assert warnings == [f"{wild} its subdomains"]
    if with_c is not None:  # the same config, the same warnings, from libyaml
        assert [p.domains for p in with_c[0].policies] == [p.domains for p in cfg.policies]
        assert with_c[1] == warnings
    # errors keep their line numbers on the pure path too
    conf.write_text(CONFIG.replace("domain_files", "domain_filez"))
    with pytest.raises(ConfigError, match=r"hrneo.yaml:5: unknown key 'domain_filez'"):
        load_config(str(conf))
    conf.write_text("policies:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"hrneo.yaml:3: YAML syntax error"):
        load_config(str(conf))


def test_cli_defaults_match_the_configs() -> None:
    assert (cli.DEFAULT_CONFIG_PATH, cli.DEFAULT_SOCKET_PATH) == (
        DEFAULT_CONFIG_PATH, DEFAULT_SOCKET_PATH
    )  # fmt: skip


def imported_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return set(out.split())


def test_status_does_not_load_the_config_machinery() -> None:
    mods = imported_by(
        "from hrneo import cli\ncli.main(['status', '--socket', '/nonexistent/hrneo.sock'])"
    )
    assert "hrneo.control" in mods
    assert not {"yaml", "hrneo.config", "difflib", "dataclasses", "subprocess"} & mods


def test_run_imports_neither_difflib_nor_urllib() -> None:
    mods = imported_by(
        "import hrneo.cli, hrneo.daemon, hrneo.pipeline, hrneo.logs\n"
        f"from hrneo.config import load_config\nload_config({str(ROOT / 'examples/hrneo.yaml')!r})"
    )
    assert "yaml" in mods and not {"difflib", "urllib", "importlib.metadata"} & mods


def light(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lightpython.argv(*args), capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def test_commands_on_the_smallest_python(tmp_path: Path) -> None:
    conf = write(tmp_path)
    r = light("check", "--config", str(conf))
    assert r.returncode == 0 and "ok: 1 policies, 4 domains" in r.stdout, r.stderr
    r = light("match", "--config", str(conf), "www.example.net")
    assert r.returncode == 0 and "policy vpn" in r.stdout, r.stderr
    r = light("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 1 and "hrneo is not running" in r.stderr, r.stderr
    r = light("install-service", "openwrt", "--root", str(tmp_path / "root"))
    assert r.returncode == 0 and "wrote " in r.stdout, r.stderr
    rconf = tmp_path / "replay.yaml"
    rconf.write_text(REPLAY_CONFIG)
    cap = tmp_path / "dns.pcapng"
    cap.write_bytes(FORMATS["pcapng"](*frames("ethernet")))
    r = light("replay", str(cap), "--config", str(rconf))
    assert r.returncode == 0 and "set hr_v4 (policy vpn): 1 address" in r.stdout, r.stderr
    # an international name needs the IDNA codec (unicodedata: python3-codecs): said, not a crash
    (tmp_path / "vpn.list").write_text("bücher.example\n")
    r = light("check", "--config", str(conf))
    assert r.returncode == 2 and "install python3-codecs" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_light_python_harness_blocks() -> None:
    r = subprocess.run(
        [sys.executable, "-c", lightpython.PRELUDE.replace("import runpy", "import urllib\n#")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "not in python3-light" in r.stderr
