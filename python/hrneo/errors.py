"""Every exception hrneo raises of its own, under one base class.

``except HrneoError`` catches them all; each is also what its kind suggests
(an :class:`IpsetError` is an ``OSError`` with the kernel's code in ``errno``).
The compiled core raises :class:`IpsetError` from here, so Python code and
Rust code report a refused set request the same way.
"""

from __future__ import annotations

from collections.abc import Iterable


class HrneoError(Exception):
    """Base class of hrneo's exceptions."""


class SetError(OSError, HrneoError):
    """The kernel refused a request about a set (ipset or nf_tables).

    ``errno`` is the kernel's code, ``strerror`` says it in words, ``set_name``
    names the set. For a batch commit that failed part-way (a set that got
    full), ``new`` lists the entries that went in as new all the same: they are
    in the set, and their conntrack entries are still to be flushed.
    """

    def __init__(
        self, code: int, message: str, set_name: str = "", new: Iterable[str] = ()
    ) -> None:
        super().__init__(code, message)
        self.set_name = set_name
        self.new = list(new)


class IpsetError(SetError):
    """The kernel refused an ipset request (``errno``: an errno, or an
    IPSET_ERR_* number above 4095)."""


class NftSetError(SetError):
    """The kernel refused an nf_tables set request (``errno``: an errno;
    ``set_name``: ``family table set``, as nft writes it)."""


class ConfigError(HrneoError):
    """The config (or a list file) is invalid; `errors` are `file:line: message` lines."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.warnings = warnings or []


class DaemonError(HrneoError, RuntimeError):
    """The daemon cannot start (sets, rules or sockets)."""


class FirewallError(HrneoError, RuntimeError):
    """A rule the daemon cannot work without could not be installed."""


class ControlError(HrneoError, RuntimeError):
    """The control socket cannot be set up, or the daemon cannot be reached."""


class ImportFailure(HrneoError):
    """`hrneo import` cannot read its input, or the usage is wrong; the message is
    `file:line: what`."""
