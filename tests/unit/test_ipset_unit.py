"""Backend choice and address handling of hrneo.fallback (no root needed)."""

from __future__ import annotations

import errno
import logging

import hrneo.fallback as hip
import pytest
from hrneo import _core
from hrneo.errors import IpsetError
from hrneo.fallback import CliConntrackFlusher, CliIpsetBatch, canonical


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1/32", "192.0.2.1"),
        ("203.0.113.77/24", "203.0.113.0/24"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("2001:db8::1/128", "2001:db8::1"),
        ("2001:db8:1:2::/48", "2001:db8:1::/48"),
    ],
)
def test_canonical_matches_netlink_text(text: str, want: str) -> None:
    assert canonical(text) == want


@pytest.mark.parametrize("bad", ["", "192.0.2.256", "x", "192.0.2.0/33", "2001:db8::/200"])
def test_canonical_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        canonical(bad)


def test_cli_batch_queue_is_ordered_and_deduplicated() -> None:
    b = CliIpsetBatch("s", timeout=5)
    b.extend(["192.0.2.2", "192.0.2.1", "192.0.2.2/32"])
    assert len(b) == 2
    b.clear()
    assert len(b) == 0
    assert b.commit() == []  # nothing queued: no process is run
    with pytest.raises(ValueError, match="invalid ipset name"):
        CliIpsetBatch("z" * 32)


@pytest.fixture
def no_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the core classes fail as socket() does without netfilter netlink."""

    def refuse(*_a: object, **_k: object) -> None:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(_core, "IpsetBatch", refuse)
    monkeypatch.setattr(_core, "ConntrackFlusher", refuse)
    monkeypatch.setattr(hip, "_fallback_logged", set())


def test_fallback_when_netlink_cannot_be_opened_is_logged_once(
    no_netlink: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hrneo.fallback"):
        b1 = hip.open_batch("s", timeout=60)
        b2 = hip.open_batch("t")
        f1 = hip.open_conntrack_flusher()
        f2 = hip.open_conntrack_flusher()
    assert isinstance(b1, CliIpsetBatch) and isinstance(b2, CliIpsetBatch)
    assert b1.timeout == 60 and b2.set_name == "t"
    assert isinstance(f1, CliConntrackFlusher) and isinstance(f2, CliConntrackFlusher)
    warnings = [r for r in caplog.records if "fallback" in r.getMessage()]
    assert len(warnings) == 2  # one for ipset, one for conntrack


def test_other_errors_do_not_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def enoent(*_a: object, **_k: object) -> None:
        raise IpsetError(errno.ENOENT, "ipset 's': no such set")

    monkeypatch.setattr(_core, "IpsetBatch", enoent)
    with pytest.raises(IpsetError):
        hip.open_batch("s")

    def bad_name(*_a: object, **_k: object) -> None:
        raise ValueError("invalid ipset name")

    monkeypatch.setattr(_core, "IpsetBatch", bad_name)
    with pytest.raises(ValueError, match="invalid ipset name"):
        hip.open_batch("s")
