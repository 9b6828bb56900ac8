"""`hrneo install-service`: what it writes, what it refuses to replace, and the
files themselves checked by the tools that will run them (busybox and dash
syntax, `systemd-analyze verify`). The scripts running against a daemon in a
namespace: tests/kernel/test_services.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require
from hrneo import cli
from hrneo.install import SERVICES_DIR, TARGETS, ours_unchanged, plan, render

ROOT_FILES = {
    "entware": {
        "opt/etc/init.d/S99hrneo": 0o755,
        "opt/etc/ndm/netfilter.d/50-hrneo.sh": 0o755,
        "opt/etc/ndm/ifstatechanged.d/50-hrneo.sh": 0o755,
    },
    "openwrt": {"etc/init.d/hrneo": 0o755, "etc/hotplug.d/iface/50-hrneo": 0o644},
    "systemd": {"etc/systemd/system/hrneo.service": 0o644},
}


def install(*argv: str) -> int:
    return cli.main(["install-service", *argv])


def test_every_shipped_file_is_used_and_present() -> None:
    used = {f.source for t in TARGETS.values() for f in t.files}
    shipped = {
        str(p.relative_to(SERVICES_DIR))
        for p in Path(SERVICES_DIR).rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    }
    assert used == shipped


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_writes_under_root_with_modes(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "conf" / "hrneo.yaml"
    assert install(target, "--root", str(tmp_path), "--config", str(conf)) == 0
    out = capsys.readouterr().out
    for rel, mode in ROOT_FILES[target].items():
        path = tmp_path / rel
        assert f"wrote {path}" in out
        assert stat.S_IMODE(path.stat().st_mode) == mode
        text = path.read_text()
        assert "@" + "PYTHON@" not in text and "@CONFIG@" not in text and "@HEADER@" not in text
        assert ours_unchanged(text) is True
    main = tmp_path / next(iter(ROOT_FILES[target]))
    assert str(conf) in main.read_text() and sys.executable in main.read_text()
    assert "next: " in out
    # again: nothing to do
    assert install(target, "--root", str(tmp_path), "--config", str(conf)) == 0
    assert capsys.readouterr().out.count("unchanged: ") == len(ROOT_FILES[target])


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert install("entware", "--root", str(tmp_path), "--dry-run") == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert f"--- {tmp_path}/opt/etc/init.d/S99hrneo (mode 0755, new) ---" in out
    assert "CONFIG=${HRNEO_CONFIG:-/opt/etc/hrneo/hrneo.yaml}" in out
    assert "(dry run: nothing written)" in out


def test_refuses_files_it_did_not_write_or_that_were_edited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = tmp_path / "opt/etc/init.d/S99hrneo"
    hook = tmp_path / "opt/etc/ndm/netfilter.d/50-hrneo.sh"
    init.parent.mkdir(parents=True)
    init.write_text("#!/bin/sh\n# someone else's S99hrneo\n")
    assert install("entware", "--root", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "was not written by hrneo install-service; not replacing it" in err
    assert "nothing written" in err and not hook.exists()  # all or nothing
    init.unlink()
    assert install("entware", "--root", str(tmp_path)) == 0
    capsys.readouterr()
    hook.write_text(hook.read_text() + "echo my own line\n")  # an edit
    assert install("entware", "--root", str(tmp_path)) == 1
    assert "was changed since hrneo install-service wrote it" in capsys.readouterr().err
    assert "echo my own line" in hook.read_text()


def test_replaces_its_own_unedited_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_conf, new_conf = tmp_path / "old.yaml", tmp_path / "new.yaml"
    assert install("systemd", "--root", str(tmp_path), "--config", str(old_conf)) == 0
    unit = tmp_path / "etc/systemd/system/hrneo.service"
    assert str(old_conf) in unit.read_text()
    capsys.readouterr()
    assert install("systemd", "--root", str(tmp_path), "--config", str(new_conf)) == 0
    assert f"replaced {unit}" in capsys.readouterr().out
    assert str(new_conf) in unit.read_text() and str(old_conf) not in unit.read_text()


def test_refuses_symlinks_and_unsafe_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = tmp_path / "etc/systemd/system/hrneo.service"
    unit.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    unit.symlink_to(target)
    assert install("systemd", "--root", str(tmp_path)) == 1
    assert "is not a regular file" in capsys.readouterr().err
    assert target.read_text() == "precious\n"
    for bad in ("/etc/my hrneo.yaml", "/etc/$(reboot).yaml", "/etc/a%n.yaml", "/etc/a'b.yaml"):
        assert install("openwrt", "--root", str(tmp_path), "--config", bad, "--dry-run") == 1
        assert "only A-Z a-z 0-9" in capsys.readouterr().err


def test_entware_script_takes_the_configs_control_socket(tmp_path: Path) -> None:
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(
        f"control_socket: {tmp_path}/c.sock\npolicies:\n  - name: p\n    ipset: s\n"
        "    domains: [a.example]\n"
    )
    (init, *_hooks) = plan("entware", str(conf), str(tmp_path))
    assert f"SOCKET=${{HRNEO_SOCKET:-{tmp_path}/c.sock}}" in init.text


def test_header_detection() -> None:
    text = render("openwrt/hotplug-iface", {"PYTHON": "/usr/bin/python3", "CONFIG": "/c"})
    assert text.splitlines()[1].startswith("# Written by hrneo install-service ")
    assert ours_unchanged(text) is True
    assert ours_unchanged(text.replace("ifupdate", "ifupdown")) is False
    assert ours_unchanged("#!/bin/sh\necho hi\n") is None


# ------------------------------------------------------------------ checked by their tools


def rendered(tmp_path: Path, target: str) -> list[Path]:
    conf = tmp_path / "hrneo.yaml"
    conf.write_text("policies: []\n")
    for p in plan(target, str(conf), str(tmp_path)):
        path = Path(p.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(p.text)
    return [tmp_path / rel for rel in ROOT_FILES[target]]


@pytest.mark.parametrize("shell", ["busybox", "dash"])
@pytest.mark.parametrize("target", ["entware", "openwrt"])
def test_shell_syntax(tmp_path: Path, shell: str, target: str) -> None:
    require(shutil.which(shell) is not None, f"needs `{shell}` (Debian package {shell})")
    argv = ["busybox", "sh", "-n"] if shell == "busybox" else ["dash", "-n"]
    for path in rendered(tmp_path, target):
        proc = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    require(
        shutil.which("systemd-analyze") is not None,
        "needs `systemd-analyze` (Debian package systemd) to verify the unit",
    )
    (unit,) = rendered(tmp_path, "systemd")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"),
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and unit.name not in out, (
        f"systemd-analyze verify {unit} exited {proc.returncode}:\n{out}\n"
        "(if this is a container without systemd's runtime directories, the message above "
        "says which; the unit itself must verify clean)"
    )
    text = unit.read_text()
    for line in (
        "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "ProtectSystem=strict",
        "StateDirectory=hrneo",
    ):  # fmt: skip
        assert f"\n{line}\n" in text
