"""The core's errors as Python sees them: one base class, OSError with the
kernel's code, ValueError for bad arguments and closed objects."""

from __future__ import annotations

import errno

import pytest
from hrneo import HrneoError, IpsetBatch, IpsetSession, Watchlist
from hrneo.errors import ConfigError, ControlError, DaemonError, FirewallError, IpsetError


def test_every_hrneo_error_has_one_base() -> None:
    for cls in (IpsetError, ConfigError, DaemonError, FirewallError, ControlError):
        assert issubclass(cls, HrneoError)
    assert issubclass(IpsetError, OSError)


def test_ipset_error_carries_code_words_set_and_new() -> None:
    e = IpsetError(4352, "ipset 's': set is full (maxelem reached)", "s", ["192.0.2.1"])
    assert (e.errno, e.set_name, e.new) == (4352, "s", ["192.0.2.1"])
    assert "set is full" in str(e)
    gone = IpsetError(errno.ENOENT, "ipset 's': no such set")
    assert (gone.set_name, gone.new) == ("", [])


def test_invalid_arguments_are_value_errors_before_any_kernel_call() -> None:
    with pytest.raises(ValueError, match="invalid ipset name"):
        IpsetBatch("x" * 40)
    with pytest.raises(ValueError, match="not a normalized domain"):
        Watchlist().add("Not A Domain", 0)


def test_a_closed_object_says_so() -> None:
    s = IpsetSession()  # a netlink socket opens without privileges
    s.close()
    with pytest.raises(ValueError, match="IpsetSession is closed"):
        s.exists("x")
    s.close()  # twice is fine
    with IpsetBatch("s") as b:
        b.add("192.0.2.1")
    with pytest.raises(ValueError, match="IpsetBatch is closed"):
        b.add("192.0.2.2")
    with pytest.raises(ValueError, match="not an IP address"):
        IpsetBatch("s").add("192.0.2.300")
