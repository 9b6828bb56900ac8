"""Config keys for lists from URLs: `domain_urls` (per policy) and `list_refresh`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hrneo.config import DEFAULT_LIST_REFRESH, ConfigError, load_config


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_domain_urls_and_list_refresh(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "list_refresh: 3600\npolicies:\n  - name: a\n    ipset: a\n    domain_urls:\n"
        "      - https://lists.example.net/a.lst\n      - http://192.0.2.1:8080/b.txt\n",
    )
    cfg, warnings = load_config(path)
    assert cfg.list_refresh == 3600
    assert cfg.policies[0].domain_urls == (
        "https://lists.example.net/a.lst",
        "http://192.0.2.1:8080/b.txt",
    )
    # A policy with only URLs is not "empty"; nothing is fetched yet (no network here).
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "domain_urls: https://lists.example.net/a.lst: not fetched yet; no copy kept",
        "domain_urls: http://192.0.2.1:8080/b.txt: not fetched yet; no copy kept",
    ]


def test_the_kept_copy_of_a_url_list_is_read_at_load(tmp_path: Path) -> None:
    from hrneo.listfetch import cache_path

    url = "http://192.0.2.1:8080/l.txt"
    cache = tmp_path / "lists"
    cache.mkdir()
    Path(cache_path(str(cache), url)).write_text(
        "# a list\nlisted.example.com\nfull:exact.example.net\n198.51.100.0/24\n"
        "203.0.113.7\n2001:db8::/48\n"
    )
    path = _write(
        tmp_path,
        f"list_cache: {cache}\npolicies:\n  - name: a\n    ipset: a\n    domain_urls: [{url}]\n",
    )
    cfg, warnings = load_config(path)
    assert cfg.list_cache == str(cache)
    assert cfg.watchlist.policy_of("www.listed.example.com") == 0
    assert cfg.watchlist.policy_of("exact.example.net") == 0
    assert set(cfg.policies[0].static) == {"198.51.100.0/24", "203.0.113.7"}
    assert any("1 IPv6 entries left out: no ipset6" in w for w in warnings), warnings


def test_defaults(tmp_path: Path) -> None:
    cfg, _ = load_config(_write(tmp_path, "policies:\n  - {name: a, ipset: a, domains: [a.b]}\n"))
    assert cfg.list_refresh == DEFAULT_LIST_REFRESH == 86400
    assert cfg.policies[0].domain_urls == ()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("list_refresh: 30", ":1: list_refresh: 30 is out of range 60..2592000"),
        ("list_refresh: 9999999", ":1: list_refresh: 9999999 is out of range"),
        ("list_refresh: soon", ":1: list_refresh: expected a number of seconds"),
        ("list_refresh: true", ":1: list_refresh: expected a number of seconds"),
    ],
)
def test_list_refresh_range(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text + "\npolicies:\n  - {name: a, ipset: a}\n"))
    assert any(error in x for x in e.value.errors), e.value.errors


def test_list_refresh_zero_means_once(tmp_path: Path) -> None:
    cfg, _ = load_config(_write(tmp_path, "list_refresh: 0\npolicies:\n  - {name: a, ipset: a}\n"))
    assert cfg.list_refresh == 0


def test_bad_urls(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "policies:\n  - name: a\n    ipset: a\n    domain_urls:\n"
        "      - file:///etc/passwd\n      - https://\n      - 42\n"
        "      - https://ok.example/x\n      - https://ok.example/x\n",
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    errs = e.value.errors
    assert f"{path}:5: domain_urls: 'file:///etc/passwd' is not an http:// or https:// URL" in errs
    assert f"{path}:6: domain_urls: 'https://' is not an http:// or https:// URL" in errs
    assert f"{path}:7: domain_urls: 42 is not a URL" in errs
    assert len(errs) == 3
    assert f"{path}:9: domain_urls: https://ok.example/x is listed twice" in e.value.warnings
