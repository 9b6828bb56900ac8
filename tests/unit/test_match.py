"""`hrneo match NAME`: the policy and rule a name goes to, from the config alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from hrneo import cli
from hrneo.config import load_config
from hrneo.match import match_name

CONFIG = """\
policies:
  - name: vpn
    ipset: hr_vpn
    ipset6: hr_vpn6
    domains: [example.org]
    domain_files: [vpn.list]
  - name: direct
    ipset: hr_direct
    domains:
      - mail.example.org
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "vpn.list").write_text("# vpn\nexample.net\nпример.рф\n")  # noqa: RUF001 (an IDN)
    path = tmp_path / "hrneo.yaml"
    path.write_text(CONFIG)
    return path


def test_match_names(conf: Path) -> None:
    cfg = load_config(str(conf))[0]
    a = match_name(cfg, "WWW.Example.ORG.")
    assert (a.name, a.policy, a.sets, a.domain) == (
        "www.example.org", "vpn", ("hr_vpn", "hr_vpn6"), "example.org"
    )  # fmt: skip
    assert a.rule == f"{conf}:5"
    # the most specific domain wins, on label boundaries
    b = match_name(cfg, "smtp.mail.example.org")
    assert (b.policy, b.sets, b.rule) == ("direct", ("hr_direct",), f"{conf}:10")
    assert match_name(cfg, "badexample.org").policy is None
    # list files: file and line of the list; IDN as punycode
    c = match_name(cfg, "cdn.пример.рф")
    assert (c.policy, c.rule, c.name) == (
        "vpn",
        f"{conf.parent}/vpn.list:3",
        "cdn.xn--e1afmkfd.xn--p1ai",
    )
    assert "no policy" in match_name(cfg, "nothing.test").text()
    with pytest.raises(ValueError, match="is an address"):
        match_name(cfg, "192.0.2.1")
    with pytest.raises(ValueError, match="is an address"):
        match_name(cfg, "[2001:db8::1]")
    with pytest.raises(ValueError, match="invalid domain"):
        match_name(cfg, "not a name")


def test_cli_match(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["match", "--config", str(conf), "a.example.net", "x.test"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        (
            f"a.example.net: policy vpn (sets hr_vpn, hr_vpn6) via example.net at "
            f"{conf.parent}/vpn.list:2"
        ),
        "x.test: no policy (no rule matches x.test)",
    ]
    # a name that is not one: exit 2, the other names still answered
    assert cli.main(["match", "--config", str(conf), "192.0.2.1", "example.org"]) == 2
    cap = capsys.readouterr()
    assert "is an address" in cap.err and "example.org: policy vpn" in cap.out
    # a broken config: its file:line errors, exit 2
    conf.write_text("policies:\n  - name: p\n")
    assert cli.main(["match", "--config", str(conf), "example.org"]) == 2
    assert f"{conf}:2: policy 'p' has no `ipset`" in capsys.readouterr().err


def test_cli_match_needs_no_root_or_daemon(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hrneo.control

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("match must not talk to a daemon")

    monkeypatch.setattr(hrneo.control, "request", refuse)
    monkeypatch.setenv("HRNEO_CONFIG", str(conf))
    assert cli.main(["match", "example.org"]) == 0
