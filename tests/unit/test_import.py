"""`hrneo import` on the command line, and `hrneo run --hydraroute` (in-memory conversion)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hrneo import cli, importer
from hrneo.config import ConfigError, load_config
from hrneo.importer import load_hydraroute_config, render, run_import
from import_helpers import FIX, no_net

HR = FIX / "hydraroute"


def test_cli_knows_the_importer_formats() -> None:
    assert cli.IMPORT_FORMATS == importer.FORMATS and cli.INLINE_MAX == importer.INLINE_MAX


def test_deterministic(tmp_path: Path) -> None:
    a = render(run_import("hydraroute", [str(HR)], net_dir=no_net(tmp_path)), "x")
    b = render(run_import("hydraroute", [str(HR)], net_dir=no_net(tmp_path)), "x")
    assert a == b


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "HydraRoute"
    shutil.copytree(HR, copy)
    assert cli.main(["import", "hydraroute", "--interface", "wg0", str(copy)]) == 0
    out = capsys.readouterr()
    assert f"{copy}/domain.conf:6: invalid domain" in out.err and "(warning)" in out.err
    cfg = tmp_path / "out.yaml"
    cfg.write_text(out.out)
    assert cli.main(["check", "--config", str(cfg)]) == 0
    assert "3 policies, 6 domains" in capsys.readouterr().out


def test_cli_import_keenpbr_with_cache_and_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v3 = FIX / "keen-pbr" / "v3"
    out = tmp_path / "out"
    argv = ["import", "keen-pbr", str(v3 / "config.json"), "--cache", str(v3 / "cache")]
    assert cli.main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "read from the cached copy" in err and f"wrote {out}/hrneo.yaml" in err
    assert cli.main(["check", "--config", str(out / "hrneo.yaml")]) == 0


def test_cli_import_big_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.list"
    big.write_text("".join(f"d{i}.example.com\n" for i in range(1200)))
    assert cli.main(["import", "list", str(big)]) == 0
    assert "--out DIR writes them as list files" in capsys.readouterr().err
    assert cli.main(["import", "list", str(big), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "lists" / "big.list").read_text().count("\n") == 1201
    assert cli.main(["check", "--config", str(tmp_path / "o" / "hrneo.yaml")]) == 0
    assert "1200 domains" in capsys.readouterr().out


def test_cli_import_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", "list", str(tmp_path / "missing.list")]) == 2
    assert f"{tmp_path}/missing.list:0: cannot read" in capsys.readouterr().err
    (tmp_path / "bad.list").write_bytes(b"\xff\xfe\n")
    assert cli.main(["import", "list", str(tmp_path / "bad.list")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert cli.main(["import", "dnsmasq", "--policy", "x", str(FIX / "dnsmasq.conf")]) == 2
    assert cli.main(["import", "list"]) == 2
    assert cli.main(["import", "keen-pbr", "a", "b"]) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["import", "nosuch", "x"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["import", "list", "--bogus", "x"])


# ------------------------------------------------------------------ run --hydraroute


def test_load_hydraroute_config(tmp_path: Path) -> None:
    d = tmp_path / "HydraRoute"
    shutil.copytree(HR, d)
    cfg, warnings = load_hydraroute_config(str(d), net_dir=no_net(tmp_path))
    assert cfg.path == str(d)
    assert [p.name for p in cfg.policies] == ["wg0", "Office", "HydraRoute"]
    hr = cfg.policies[2]
    assert (hr.timeout, hr.maxelem, hr.domains) == (7200, 65536, ("example.com", "cdn.example.com"))
    assert hr.static == ("192.0.2.0/24", "2001:db8:1::/48")
    assert any(w.startswith(f"{d}/domain.conf:6: invalid domain") for w in warnings)
    # the same rules as `hrneo import hydraroute`
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    assert warnings == res.warnings
    # a tool rewrites domain.conf, then SIGHUP: the loader reads the new state
    (d / "domain.conf").write_text("new.example.org/HydraRoute\n")
    cfg2, _ = load_hydraroute_config(cfg.path, net_dir=no_net(tmp_path))
    assert cfg2.policies[-1].domains == ("new.example.org",)


def test_load_hydraroute_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_hydraroute_config(str(tmp_path / "nope"))
    assert e.value.errors == [f"{tmp_path}/nope:0: not a HydraRoute Neo directory"]


def test_load_hydraroute_config_with_base(tmp_path: Path) -> None:
    base = tmp_path / "hrneo.yaml"
    base.write_text("nflog_group: 7\ncontrol_socket: /run/x.sock\npolicies: []\n")
    cfg, _ = load_hydraroute_config(str(HR), base=str(base), net_dir=no_net(tmp_path))
    assert (cfg.nflog_group, cfg.control_socket, cfg.path) == (7, "/run/x.sock", str(HR))
    assert len(cfg.policies) == 3
    base.write_text("policies:\n  - name: a\n    ipset: a\n    domains: [a.example]\n")
    with pytest.raises(ConfigError, match="write `policies: \\[\\]` here"):
        load_hydraroute_config(str(HR), base=str(base), net_dir=no_net(tmp_path))


def test_cli_run_hydraroute_gives_the_daemon_the_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hrneo.daemon

    seen: dict[str, Any] = {}

    class FakeDaemon:
        def __init__(self, cfg: Any, *, loader: Any, **_kw: Any) -> None:
            seen["cfg"], seen["loader"] = cfg, loader

        def run(self) -> int:
            return 0

    monkeypatch.setattr(hrneo.daemon, "Daemon", FakeDaemon)
    d = tmp_path / "HydraRoute"
    shutil.copytree(HR, d)
    assert cli.main(["run", "--hydraroute", str(d), "--log-level", "ERROR"]) == 0
    cfg = seen["cfg"]
    assert cfg.path == str(d) and [p.name for p in cfg.policies][-1] == "HydraRoute"
    # SIGHUP: the daemon calls loader(config.path)
    reloaded, _ = seen["loader"](cfg.path)
    assert reloaded.policies == cfg.policies
    # the plain config path keeps the plain loader
    plain = tmp_path / "plain.yaml"
    plain.write_text("policies:\n  - name: a\n    ipset: a\n    domains: [a.example]\n")
    assert cli.main(["run", "--config", str(plain), "--log-level", "ERROR"]) == 0
    assert seen["loader"] is load_config
    assert cli.main(["run", "--hydraroute", str(tmp_path / "nope"), "--log-level", "ERROR"]) == 2
