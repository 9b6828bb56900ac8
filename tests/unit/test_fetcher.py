"""The daemon fetching `domain_urls` in the background, against a local HTTP
server: a list that arrives (or changes) applies like a reload; a 404, garbage,
an oversized body or a timeout keeps the last good copy and says why; start-up
never waits for the network."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from hrneo.fetcher import ListFetcher
from hrneo.listfetch import cache_path
from test_daemon_unit import make
from test_listfetch import _Handler, server  # noqa: F401 (the fixture)

CONFIG = """\
nflog_group: 100
control_socket: {{sock}}
list_cache: {cache}
list_refresh: 0
firewall:
  recheck_interval: 0
policies:
  - name: vpn1
    ipset: hr_vpn1
    domains: [example.org]
    domain_urls: [{url}]
"""


def wait(cond: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_fetched_list_applies_like_a_reload(server: str, tmp_path: Path) -> None:  # noqa: F811
    _Handler.routes = {"/vpn.lst": (200, b"listed.example.com\n203.0.113.9\n", 0.0)}
    url = f"{server}/vpn.lst"
    d, core, _r, cfg = make(tmp_path, CONFIG.format(cache=tmp_path / "lists", url=url))
    assert cfg.watchlist.policy_of("a.listed.example.com") == -1  # nothing kept yet
    t0 = time.monotonic()
    d.start()
    try:
        assert time.monotonic() - t0 < 2, "start-up does not wait for the fetch"
        assert d.lists.fetcher is not None
        assert wait(lambda: d.lists.fetcher.rounds >= 1)  # type: ignore[union-attr]
        assert wait(lambda: (d.step(max_wait=0.05), d.last_reload)[1] is not None)
        assert d.last_reload is not None and d.last_reload["ok"], d.last_reload
        assert d.config.watchlist.policy_of("a.listed.example.com") == 0
        assert d.config.policies[0].static == ("203.0.113.9",)
        assert len(core.pipelines[0].plans) == 2
        # The reload it asked for changed no URL: the same fetcher goes on.
        fetcher = d.lists.fetcher
        d.reload()
        assert d.lists.fetcher is fetcher
    finally:
        d.stop()
    assert d.lists.fetcher is None


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ((404, b"gone", 0.0), "HTTP 404"),
        ((200, bytes(range(256)) * 64, 0.0), "not a list"),
        ((200, b"x.example.com\n" * 20_000, 0.0), "bytes"),
        ((200, b"slow.example.com\n", 3.0), "timed out"),
    ],
    ids=["404", "garbage", "oversized", "timeout"],
)
def test_a_failed_fetch_keeps_the_last_good_copy(
    server: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    route: tuple[int, bytes, float],
    why: str,
) -> None:
    url = f"{server}/l.lst"
    cache = tmp_path / "lists"
    cache.mkdir()
    Path(cache_path(str(cache), url)).write_text("kept.example.com\n")
    _Handler.routes = {"/l.lst": route}
    changes: list[int] = []
    f = ListFetcher(
        [url], str(cache), 0, lambda: changes.append(1), timeout=0.5, max_bytes=64 << 10
    )
    with caplog.at_level(logging.WARNING, logger="hrneo.fetcher"):
        assert f.fetch_all() is False
    assert changes == []
    assert any(
        why in r.getMessage() and "using the copy" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert Path(cache_path(str(cache), url)).read_text() == "kept.example.com\n"


def test_refresh_fetches_again_and_stop_ends_it(server: str, tmp_path: Path) -> None:  # noqa: F811
    url = f"{server}/r.lst"
    _Handler.routes = {"/r.lst": (200, b"one.example.com\n", 0.0)}
    changes: list[int] = []
    f = ListFetcher([url, url], str(tmp_path), 0.2, lambda: changes.append(1))
    assert f.urls == (url,)
    f.start()
    try:
        assert wait(lambda: f.rounds >= 1) and changes == [1]
        _Handler.routes = {"/r.lst": (200, b"two.example.com\n", 0.0)}
        assert wait(lambda: len(changes) == 2)
        rounds = f.rounds
        assert wait(lambda: f.rounds > rounds + 1)
        assert changes == [1, 1], "an unchanged list changes nothing"
    finally:
        f.stop()
    rounds = f.rounds
    time.sleep(0.5)
    assert f.rounds == rounds
