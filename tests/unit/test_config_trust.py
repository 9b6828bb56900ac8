"""The config keys against forged answers and a dead tunnel (trusted_resolvers,
verify_answers, kill_switch), number ranges, and hostile input: every case is a
ConfigError with `file:line`, in bounded time and memory, never another exception
or a hang."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hrneo import cli
from hrneo.config import ConfigError, load_config
from hrneo.config.reader import MAX_DEPTH
from hrneo.safeio import MAX_CONFIG_BYTES, MAX_LIST_BYTES

REPO = Path(__file__).resolve().parents[2]
POLICY = "policies:\n  - name: p\n    ipset: s\n    domains: [example.org]\n"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hrneo.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return ei.value.errors


def assert_error_at(path: str, line: int, needle: str) -> None:
    errs = errors_of(path)
    assert any(e.startswith(f"{path}:{line}:") and needle in e for e in errs), errs


# ------------------------------------------------------------------ new keys


def test_trusted_resolvers_are_networks_in_cidr_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "trusted_resolvers:\n  - 203.0.113.53\n  - 198.51.100.0/24\n  - 2001:db8::53\n"
        "  - 192.0.2.53/24\n  - 203.0.113.53\n  - 127.0.0.1\n" + POLICY,
    )
    cfg, warnings = load_config(path)
    assert cfg.trusted_resolvers == (
        "203.0.113.53/32",
        "198.51.100.0/24",
        "2001:db8::53/128",
        "192.0.2.0/24",
        "127.0.0.1/32",
    )
    assert any(w.startswith(f"{path}:5:") and "host bits" in w for w in warnings), warnings
    assert any(w.startswith(f"{path}:6:") and "twice" in w for w in warnings), warnings
    assert any(w.startswith(f"{path}:7:") and "loopback" in w for w in warnings), warnings


def test_trusted_resolvers_default_and_errors(tmp_path: Path) -> None:
    cfg, _ = load_config(write(tmp_path, POLICY))
    assert cfg.trusted_resolvers == ()
    assert cfg.firewall.verify_answers is True
    path = write(tmp_path, "trusted_resolvers: [203.0.113.53, dns.example, 7]\n" + POLICY)
    errs = errors_of(path)
    assert sum(e.startswith(f"{path}:1:") for e in errs) == 2, errs
    assert_error_at(write(tmp_path, "trusted_resolvers: 203.0.113.53\n" + POLICY), 1, "list")
    assert_error_at(write(tmp_path, "trusted_resolvers: [fe80::1%eth0]\n" + POLICY), 1, "scope")


def test_verify_answers_and_kill_switch(tmp_path: Path) -> None:
    text = (
        "firewall:\n  verify_answers: false\n" + POLICY + "    route:\n      interface: wg0\n"
        "      table: 7\n      mark: 7\n      kill_switch: true\n"
    )
    cfg, _ = load_config(write(tmp_path, text))
    assert cfg.firewall.verify_answers is False
    route = cfg.policies[0].route
    assert route is not None and route.kill_switch is True
    cfg, _ = load_config(write(tmp_path, text.replace("      kill_switch: true\n", "")))
    assert cfg.policies[0].route is not None and cfg.policies[0].route.kill_switch is False
    assert_error_at(write(tmp_path, text.replace("kill_switch: true", "kill_switch: yes please")),
                    11, "true or false")  # fmt: skip
    assert_error_at(write(tmp_path, text.replace("verify_answers: false", "verify_answers: 1")), 2,
                    "true or false")  # fmt: skip


def test_empty_policies_warns(tmp_path: Path) -> None:
    for text in ("policies: []\n", "policies:\n"):
        path = write(tmp_path, text)
        cfg, warnings = load_config(path)
        assert cfg.policies == ()
        assert any(w.startswith(f"{path}:1:") and "empty" in w for w in warnings), warnings


# ------------------------------------------------------------------ numbers

ROUTE = "    route:\n      interface: wg0\n      table: 7\n      mark: 7\n"


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("recheck_interval", ".nan", 2),
        ("recheck_interval", ".inf", 2),
        ("recheck_interval", "-.inf", 2),
        ("recheck_interval", "1e-9", 2),
        ("recheck_interval", "0.5", 2),
        ("recheck_interval", "-1", 2),
        ("recheck_interval", "86401", 2),
        ("recheck_interval", "true", 2),
        ("rule_priority", "0", 2),
        ("rule_priority", "32766", 2),
        ("rule_priority", ".nan", 2),
    ],
)
def test_firewall_numbers_are_range_checked(
    tmp_path: Path, key: str, value: str, line: int
) -> None:
    assert_error_at(write(tmp_path, f"firewall:\n  {key}: {value}\n" + POLICY), line, key)


@pytest.mark.parametrize("value", ["0", "1", "2.5", "86400"])
def test_recheck_interval_accepts_off_and_sane_periods(tmp_path: Path, value: str) -> None:
    cfg, _ = load_config(write(tmp_path, f"firewall:\n  recheck_interval: {value}\n" + POLICY))
    assert cfg.firewall.recheck_interval == float(value)


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("nflog_group: -1\n" + POLICY, 1, "nflog_group"),
        ("nflog_group: 65536\n" + POLICY, 1, "nflog_group"),
        ("nflog_group: .nan\n" + POLICY, 1, "nflog_group"),
        ("nflog_group: 1e3\n" + POLICY, 1, "nflog_group"),
        ("list_refresh: 59\n" + POLICY, 1, "list_refresh"),
        ("list_refresh: .inf\n" + POLICY, 1, "list_refresh"),
        ("list_refresh: 2592001\n" + POLICY, 1, "list_refresh"),
        (POLICY + "    timeout: 2147484\n", 5, "timeout"),
        (POLICY + "    timeout: .inf\n", 5, "timeout"),
        (POLICY + "    maxelem: 0\n", 5, "maxelem"),
        (POLICY + "    maxelem: 2147483648\n", 5, "maxelem"),
        (POLICY + ROUTE.replace("table: 7", "table: 0"), 7, "table"),
        (POLICY + ROUTE.replace("table: 7", "table: 4294967296"), 7, "table"),
        (POLICY + ROUTE.replace("table: 7", "table: .nan"), 7, "table"),
        (POLICY + ROUTE.replace("mark: 7", "mark: 0"), 8, "mark"),
        (POLICY + ROUTE.replace("mark: 7", "mark: -1"), 8, "mark"),
        (POLICY + ROUTE.replace("mark: 7", "mark: 1.5"), 8, "mark"),
        (POLICY + ROUTE + "      mask: 0\n", 9, "mask"),
        (POLICY + ROUTE + "      priority: 32766\n", 9, "priority"),
        (POLICY + ROUTE + "      priority: -.inf\n", 9, "priority"),
    ],
)
def test_every_number_is_range_checked(tmp_path: Path, text: str, line: int, needle: str) -> None:
    assert_error_at(write(tmp_path, text), line, needle)


# ------------------------------------------------------------------ hostile YAML


def test_deep_nesting_is_an_error_not_recursion(tmp_path: Path) -> None:
    for deep in (
        "policies:\n  - " + "[" * 5000 + "]" * 5000 + "\n",
        "".join(f"{' ' * i}k{i}:\n" for i in range(3000)),
        "a: " + "{b: " * 5000 + "}" * 5000 + "\n",
    ):
        path = write(tmp_path, deep)
        errs = errors_of(path)
        assert len(errs) == 1 and f"deeper than {MAX_DEPTH}" in errs[0], errs
        assert errs[0].startswith(f"{path}:"), errs


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system [echo owned]",
        "!!python/name:os.system",
        "!!python/object:collections.OrderedDict {}",
        "!unknown x",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!!omap [a: 1]",
    ],
)
def test_foreign_tags_are_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"nflog_group: 5\nfirewall:\n  ipv6: {value}\n" + POLICY)
    assert_error_at(path, 3, "is not allowed")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("!!int abc", "as int"),
        ("!!float x", "as float"),
        ("!!timestamp 2020-99-99", "as timestamp"),
    ],
)
def test_values_their_tag_cannot_make_are_errors(tmp_path: Path, value: str, needle: str) -> None:
    assert_error_at(write(tmp_path, f"nflog_group: {value}\n" + POLICY), 1, needle)
    assert_error_at(write(tmp_path, POLICY.replace("[example.org]", f"[{value}]")), 4, needle)


def test_merge_and_value_keys_are_plain_unknown_keys(tmp_path: Path) -> None:
    assert_error_at(write(tmp_path, "<<: {nflog_group: 5}\n" + POLICY), 1, "unknown key '<<'")
    assert_error_at(write(tmp_path, POLICY.replace("[example.org]", "[=]")), 4, "'='")


def test_alias_bomb_is_bounded(tmp_path: Path) -> None:
    lines = ["a: &a [" + ", ".join(["x.example"] * 50) + "]"]
    prev = "a"
    for i in range(8):  # 50 * 10**8 nodes if expanded
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*{prev}"] * 10) + "]")
        prev = f"l{i}"
    path = write(tmp_path, "\n".join(lines) + f"\npolicies: *{prev}\n")
    t0 = time.monotonic()
    errs = errors_of(path)
    assert time.monotonic() - t0 < 10
    assert any("YAML nodes" in e for e in errs), errs


def test_self_referencing_alias_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "policies: &p\n  - name: p\n    ipset: s\n    domains: *p\n")
    errors_of(path)  # an error, not RecursionError


def test_config_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.yaml"
    path.write_bytes(b"nflog_group: 5\npolicies:\n  - name: \xff\xfe\n")
    errs = errors_of(str(path))
    assert errs[0].startswith(f"{path}:3:") and "UTF-8" in errs[0], errs
    path.write_bytes(b"nflog_group: 5\n\x00\x01\x02\n")
    errs = errors_of(str(path))
    assert errs[0].startswith(f"{path}:2:"), errs
    path.write_bytes(os.urandom(4096))
    errors_of(str(path))


# ------------------------------------------------------------------ files that are not files


def special_files(tmp_path: Path) -> dict[str, str]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.list"
    with open(huge, "wb") as f:
        f.truncate(MAX_LIST_BYTES + 1)  # sparse: no disk space used
    (tmp_path / "adir").mkdir()
    return {
        "character device": "/dev/zero",
        "FIFO": str(fifo),
        "directory": str(tmp_path / "adir"),
        "MiB": str(huge),
    }


@pytest.mark.timeout(30)
def test_domain_files_must_be_regular_files_of_bounded_size(tmp_path: Path) -> None:
    for needle, target in special_files(tmp_path).items():
        path = write(tmp_path, POLICY + f"    domain_files:\n      - {target}\n")
        t0 = time.monotonic()
        assert_error_at(path, 6, needle)
        assert time.monotonic() - t0 < 5


@pytest.mark.timeout(30)
def test_config_must_be_a_regular_file_of_bounded_size(tmp_path: Path) -> None:
    files = special_files(tmp_path)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)
    files["MiB"] = str(big)
    for needle, target in files.items():
        errs = errors_of(target)
        assert len(errs) == 1 and errs[0].startswith(f"{target}:0:") and needle in errs[0], errs


def test_binary_list_file_is_reported_by_line_and_cut_short(tmp_path: Path) -> None:
    blob = tmp_path / "blob.list"
    blob.write_bytes(b"example.com\n" + bytes(range(256)) * 4000)
    path = write(tmp_path, POLICY + f"    domain_files: [{blob}]\n")
    errs = errors_of(path)
    assert any(e.startswith(f"{blob}:2:") for e in errs), errs[:3]
    assert any("the rest is not read" in e for e in errs), errs[-3:]
    assert len(errs) <= 25


def test_long_line_in_list_file(tmp_path: Path) -> None:
    lst = tmp_path / "long.list"
    lst.write_text("example.com\n" + "a" * 10000 + "\nexample.net\n")
    path = write(tmp_path, POLICY + f"    domain_files: [{lst}]\n")
    assert errors_of(path) == [f"{lst}:2: line longer than 4096 bytes"]


def test_error_count_is_bounded(tmp_path: Path) -> None:
    bad = ", ".join(f"bad..{i}" for i in range(5000))
    path = write(tmp_path, POLICY.replace("[example.org]", f"[{bad}]"))
    errs = errors_of(path)
    assert len(errs) == 201 and errs[-1].endswith("4800 more errors not shown"), errs[-1]


# ------------------------------------------------------------------ hrneo check


@pytest.mark.timeout(60)
def test_check_exits_2_with_file_line_for_every_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "nested": "policies:\n  - " + "[" * 3000 + "]" * 3000 + "\n",
        "python tag": "nflog_group: !!python/object/apply:os.system [id]\n" + POLICY,
        "nan": "firewall:\n  recheck_interval: .nan\n" + POLICY,
    }
    for name, target in special_files(tmp_path).items():
        cases[name] = POLICY + f"    domain_files: [{target}]\n"
    for name, text in cases.items():
        path = write(tmp_path, text)
        assert cli.main(["check", "--config", path]) == 2, name
        err = capsys.readouterr().err
        assert f"{path}:" in err, (name, err)


@pytest.mark.timeout(120)
def test_check_of_dev_zero_list_runs_in_bounded_memory(tmp_path: Path) -> None:
    """The whole program under a 1 GiB address-space limit: exit 2, not MemoryError."""
    path = write(tmp_path, POLICY + "    domain_files: [/dev/zero]\n")
    limit = 1024 * 1024 * 1024

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "hrneo", "check", "--config", path],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap,
        env=dict(os.environ, PYTHONPATH=str(REPO / "python")),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:5: domain_files: /dev/zero is a character device" in proc.stderr


@pytest.mark.timeout(30)
def test_hydraroute_directory_with_a_fifo_or_device_is_refused(tmp_path: Path) -> None:
    """`run --hydraroute DIR` reloads DIR on SIGHUP: its files get the same bounds."""
    import shutil

    from hrneo.importer import load_hydraroute_config

    src = REPO / "tests" / "fixtures" / "import" / "hydraroute"
    for name, make in (
        ("fifo", os.mkfifo),
        ("dev", lambda p: os.symlink("/dev/zero", p)),
    ):
        d = tmp_path / name
        shutil.copytree(src, d)
        (d / "domain.conf").unlink()
        make(d / "domain.conf")
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as ei:
            load_hydraroute_config(str(d))
        assert time.monotonic() - t0 < 5
        assert f"{d}/domain.conf:0:" in ei.value.errors[0], ei.value.errors
