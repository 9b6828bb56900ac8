"""The state file's format, its atomic write, and its strict read."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from hrneo import statefile
from hrneo.statefile import (
    MAX_STATE_BYTES,
    Clock,
    Saved,
    StateRefused,
    encode,
    load,
    parse,
    ram_backed,
    read_state,
    restorable,
    write_atomic,
)

T0 = 1_700_000_000.0
BOOT = "0c0ffee0-0000-4000-8000-000000000001"
STATE = {
    "hr_vpn": [("203.0.113.5", 600), ("198.51.100.0/24", 120)],
    "hr_vpn6": [("2001:db8::5", 300)],
}
SETS = {"hr_vpn": 4, "hr_vpn6": 6}


def written(path: Path, state: dict[str, list[tuple[str, int]]] = STATE) -> None:
    write_atomic(str(path), encode(state, Clock(T0, BOOT, 5000.0)))


def test_format_is_named_versioned_and_timed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    written(path)
    doc = json.loads(path.read_text())
    assert doc == {
        "format": "hrneo-state",
        "version": 1,
        "written": T0,
        "boot_id": BOOT,
        "uptime": 5000.0,
        "sets": {
            "hr_vpn": [["203.0.113.5", 600], ["198.51.100.0/24", 120]],
            "hr_vpn6": [["2001:db8::5", 300]],
        },
    }
    saved = read_state(str(path))
    assert saved == Saved(Clock(T0, BOOT, 5000.0), STATE)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_write_creates_the_directory_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "hrneo" / "state.json"
    written(path)
    written(path, {"hr_vpn": [("192.0.2.1", 5)]})
    assert os.listdir(path.parent) == ["state.json"]
    assert read_state(str(path)) == Saved(Clock(T0, BOOT, 5000.0), {"hr_vpn": [("192.0.2.1", 5)]})


def test_a_crash_mid_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    written(path)
    before = path.read_bytes()

    def power_cut(*args: object) -> None:
        raise OSError(5, "Input/output error")

    # The data never reaches the disk, or the rename never happens: the old file stays.
    for target in ("fsync", "replace"):
        with monkeypatch.context() as m:
            m.setattr(statefile.os, target, power_cut)
            with pytest.raises(OSError, match="Input/output error"):
                written(path, {"hr_vpn": [("192.0.2.1", 5)]})
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["state.json"]
    # A temporary file a real crash left is overwritten, never read.
    (tmp_path / ".state.json.tmp").write_bytes(b'{"format": "hrn')
    assert read_state(str(path)) is not None
    written(path, {"hr_vpn": [("192.0.2.1", 5)]})
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_symlink_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / ".state.json.tmp").symlink_to(victim)
    # ELOOP: "Too many levels of symbolic links" (glibc), "Symbolic link loop" (musl).
    with pytest.raises(OSError, match=r"(?i)symbolic link"):
        written(tmp_path / "state.json")
    assert victim.read_text() == "keep me"


GOOD = encode(STATE, Clock(T0, BOOT, 5000.0))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "not JSON"),
        (GOOD[: len(GOOD) // 2], "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"hello": "world"}', "not an hrneo state file"),
        (b'["hrneo-state", 1]', "not an hrneo state file"),
        (GOOD.replace(b'"version":1', b'"version":2'), "version 2, written by a later hrneo"),
        (GOOD.replace(b'"version":1', b'"version":"1"'), "version '1' is not one"),
        (GOOD.replace(b'"written":1700000000.0', b'"written":-1'), '"written" -1'),
        (GOOD.replace(b'"boot_id":"', b'"boot_id":7,"x":"'), '"boot_id" 7'),
        (GOOD.replace(b'"uptime":5000.0', b'"uptime":"soon"'), "\"uptime\" 'soon'"),
        (GOOD.replace(b'"sets":{', b'"sets":[],"x":{'), '"sets" is not a mapping'),
        (GOOD.replace(b'[["2001:db8::5",300]]', b'"2001:db8::5"'), "entries are not a list"),
        (GOOD.replace(b"203.0.113.5", b"203.0.113.500"), "set hr_vpn, entry 1"),
        (GOOD.replace(b"198.51.100.0/24", b"198.51.100.1/24"), "set hr_vpn, entry 2"),
        (GOOD.replace(b"2001:db8::5", b"2001:db8::5/64"), "set hr_vpn6, entry 1"),
        (GOOD.replace(b"2001:db8::5", b"2001:db8::/129"), "set hr_vpn6, entry 1"),
        (GOOD.replace(b"198.51.100.0/24", b"198.51.100.0/32"), "set hr_vpn, entry 2"),
        (GOOD.replace(b"203.0.113.5", rb"203.0.113.5\u0000"), "set hr_vpn, entry 1"),
        (GOOD.replace(b",600]", b",0]"), "set hr_vpn, entry 1"),
        (GOOD.replace(b",600]", b",true]"), "set hr_vpn, entry 1"),
        (GOOD.replace(b",600]", b",600.5]"), "set hr_vpn, entry 1"),
        (GOOD.replace(b",600]", b",2147484]"), "set hr_vpn, entry 1"),
        (GOOD.replace(b",600]", b",600,1]"), "set hr_vpn, entry 1"),
    ],
)
def test_corrupt_and_foreign_files_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(StateRefused, match=why.replace("(", r"\(")):
        parse(data)


def test_refused_files_are_logged_with_path_and_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "state.json"
    assert load(str(path), SETS) is None
    assert f"state file {path}: none yet" in caplog.text
    path.write_bytes(b"\x00garbage")
    assert load(str(path), SETS) is None
    assert f"state file {path} ignored: not JSON" in caplog.text
    with open(path, "wb") as f:
        f.truncate(MAX_STATE_BYTES + 1)  # sparse: no disk used
    assert load(str(path), SETS) is None
    assert f"ignored: is {MAX_STATE_BYTES + 1} bytes, over the limit of 64 MiB" in caplog.text
    path.unlink()
    path.mkdir()
    assert load(str(path), SETS) is None
    assert "ignored: is a directory, not a regular file" in caplog.text
    path.rmdir()
    os.mkfifo(path)  # a FIFO would block a plain open(): refused at once
    assert load(str(path), SETS) is None
    assert "ignored: is a FIFO" in caplog.text


def test_time_left_counts_down_and_expired_entries_are_skipped() -> None:
    saved = Saved(Clock(T0, BOOT, 5000.0), STATE)
    other_boot = Clock(T0 + 120.5, "another-boot", 30.0)
    got = restorable(saved, SETS, other_boot)
    assert got.elapsed == 120.5 and got.clock_note is None
    # 600 - 120.5 -> 479 (rounded down); 120 - 120.5 -> expired.
    assert got.state == {"hr_vpn": [("203.0.113.5", 479)], "hr_vpn6": [("2001:db8::5", 179)]}
    assert (got.entries, got.expired) == (2, 1)
    # Everything expired: nothing to restore.
    got = restorable(saved, SETS, Clock(T0 + 601, "another-boot", 30.0))
    assert got.state == {} and got.expired == 3


def test_same_boot_counts_on_the_boot_clock_not_the_wall_clock() -> None:
    saved = Saved(Clock(T0, BOOT, 5000.0), STATE)
    # NTP stepped the wall clock a day ahead; 100 s passed since the write.
    got = restorable(saved, SETS, Clock(T0 + 86400, BOOT, 5100.0))
    assert got.elapsed == 100.0
    assert got.state["hr_vpn"] == [("203.0.113.5", 500), ("198.51.100.0/24", 20)]


def test_a_clock_behind_the_file_counts_as_no_time_passed() -> None:
    saved = Saved(Clock(T0, BOOT, 5000.0), STATE)
    got = restorable(saved, SETS, Clock(T0 - 3600, "another-boot", 20.0))
    assert got.elapsed == 0.0
    assert got.clock_note is not None and "3600 s behind" in got.clock_note
    assert got.state == STATE


def test_sets_no_longer_in_the_config_and_wrong_families_are_dropped() -> None:
    saved = Saved(
        Clock(T0, BOOT, 5000.0),
        {
            "hr_vpn": [("203.0.113.5", 600), ("2001:db8::9", 600)],
            "hr_vpn6": [("2001:db8::5", 300), ("192.0.2.9", 300)],
            "hr_old": [("192.0.2.1", 300), ("192.0.2.2", 300)],
            "hr_empty": [],
        },
    )
    got = restorable(saved, SETS, Clock(T0 + 10, BOOT, 5010.0))
    assert got.state == {"hr_vpn": [("203.0.113.5", 590)], "hr_vpn6": [("2001:db8::5", 290)]}
    assert got.dropped_sets == {"hr_old": 2}
    assert got.wrong_family == 2


def test_a_file_in_ram_is_told_apart(tmp_path: Path) -> None:
    ram, usb = tmp_path / "ram", tmp_path / "ram" / "my usb"
    usb.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/root / squashfs ro 0 0\n"
        f"tmpfs {ram} tmpfs rw,nosuid 0 0\n"
        f"/dev/sda1 {str(usb).replace(' ', chr(92) + '040')} ext4 rw 0 0\n"
    )
    assert ram_backed(f"{ram}/hrneo/state.json", str(mounts)) == "tmpfs"
    assert ram_backed(f"{usb}/hrneo/state.json", str(mounts)) is None
    assert ram_backed(f"{tmp_path}/ramx/state.json", str(mounts)) is None
    assert ram_backed(f"{ram}/state.json", str(tmp_path / "no-such-file")) is None
