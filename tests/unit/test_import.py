"""`hrneo import` on the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hrneo import cli, importer
from hrneo.importer import render, run_import
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
