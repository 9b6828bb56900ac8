"""Domain names as hrneo matches them: normalisation and the host name rules.

One place for the rules, so `hrneo check` (config and list files) and
`hrneo import` accept and refuse the same names.

Rules, after lower-casing, IDNA (punycode) and stripping one trailing dot:

- at most 253 characters; labels of 1..63 characters of ``a-z 0-9 - _``;
- a label does not start or end with ``-`` (RFC 952/1123 host names);
- ``_`` is allowed anywhere in a label, but a label needs at least one letter
  or digit: DNS practice puts ``_`` in service labels (``_dmarc``,
  ``_sip._tcp``) and some real host names carry it, so refusing it would lose
  routable names, while ``_`` or ``_-_`` alone is never a host;
- the last label is not all digits (no top-level domain is), which also keeps
  ``1.2.3`` and ``10`` from passing as names.

An IP address or a network where a domain is expected, and v2fly rule prefixes
(``regexp:``, ``keyword:``, ...), get a message that says what they are.
"""

from __future__ import annotations

import ipaddress
import re

# A label: optional leading underscores, then a letter or digit, then anything
# of a-z 0-9 - _ that does not end with '-'.
_LABEL = r"_*[a-z0-9](?:[a-z0-9_-]*[a-z0-9_])?"
_NAME_RE = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}$")
# The common case in one match: already lower-case ASCII, no leading '*.'/'.', a
# last label that is not all digits (lists of 100k names go through here).
_PLAIN_NAME_RE = re.compile(rf"^(?:{_LABEL}\.)*(?![0-9]+$){_LABEL}$")
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_V2FLY = re.compile(
    r"^(regexp|keyword|include|full|domain|geosite|geoip|ext|ext-domain):", re.IGNORECASE
)


def address_of(raw: str) -> tuple[str, bool] | None:
    """(canonical text, is a network) if `raw` is an IPv4/IPv6 address or network.

    A network with host bits set is given as its network (``192.0.2.1/24`` ->
    ``192.0.2.0/24``); a /32 or /128 is given as the bare address, the form
    hrneo's ``static`` list stores.
    """
    text = raw.strip()
    if not text or not (text[0].isdigit() or ":" in text):
        return None  # cheap reject: every address starts with a digit or has ':'
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address), "/" in text
    return str(net), True


def _why_invalid(raw: str, name: str) -> str:
    """The reason `name` (normalised from `raw`) is not a host name."""
    bad = sorted({c for c in name if c not in _ALLOWED})
    if bad:
        return f"invalid domain {raw!r}: {bad[0]!r} is not allowed (a-z 0-9 - _ and dots)"
    for label in name.split("."):
        if not label:
            return f"invalid domain {raw!r}: empty label"
        if len(label) > 63:
            return f"invalid domain {raw!r}: label {label[:20]!r}... is longer than 63 characters"
        if label.startswith("-") or label.endswith("-"):
            return f"invalid domain {raw!r}: label {label!r} starts or ends with '-'"
        if not any(c.isalnum() for c in label):
            return f"invalid domain {raw!r}: label {label!r} has no letter or digit"
    return f"invalid domain {raw!r}: labels must be 1..63 characters of a-z 0-9 - _"


def plain_name(raw: str) -> str | None:
    """`raw` lower-cased if it is a host name needing no other change, else None.

    The fast path for big lists: one regex match; anything else (IDN, `*.`,
    trailing dot, long names, addresses, errors) is for normalize_domain.
    """
    name = raw.strip().lower()
    if len(name) <= 63 and _PLAIN_NAME_RE.match(name):  # <= 63: no label can be longer
        return name
    return None


def normalize_domain(raw: str) -> tuple[str, str | None]:
    """Lower-case, punycode and check one domain; return (domain, warning or None).

    Raises ValueError with the reason if the domain is unusable.
    """
    name = plain_name(raw)
    if name is not None:
        return name, None
    name = raw.strip().lower()
    warning = None
    if name.startswith("*."):
        name = name[2:]
        warning = f"leading '*.' stripped from {raw!r}: a domain always matches its subdomains"
    elif name.startswith("."):
        name = name.lstrip(".")
        warning = f"leading '.' stripped from {raw!r}: a domain always matches its subdomains"
    name = name.removesuffix(".")  # absolute form "example.com." means the same
    if not name.isascii():
        try:
            # IDNA 2003 (stdlib); the wire carries the punycode form.
            name = name.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"invalid international domain {raw!r}: {e}") from None
        except LookupError:  # the idna codec needs unicodedata (OpenWrt: python3-codecs)
            raise ValueError(
                f"international domain {raw!r}: this Python has no IDNA codec (install "
                "python3-codecs), or write the name in punycode (xn--...)"
            ) from None
    if len(name) > 253:
        raise ValueError(f"domain {raw!r} is longer than 253 characters")
    if _NAME_RE.match(name) and (len(name) <= 63 or max(map(len, name.split("."))) <= 63):
        last = name.rpartition(".")[2]
        if not last.isdigit():
            return name, warning
    raise ValueError(_refusal(raw, name))


def _refusal(raw: str, name: str) -> str:
    """The message for a name the rules refuse (only built on the error path)."""
    addr = address_of(raw)
    if addr is not None:
        what = "a network" if addr[1] else "an IP address"
        return f"{raw.strip()!r} is {what}, not a domain: put it under `static`"
    m = _V2FLY.match(raw.strip())
    if m:
        kind = m.group(1).lower()
        if kind in ("full", "domain"):
            return (
                f"{raw.strip()!r}: a v2fly {kind}: rule; write the bare name "
                "(`hrneo import list` converts such lists)"
            )
        return f"{raw.strip()!r}: not supported: {kind} (a v2fly rule)"
    if name and _NAME_RE.match(name) and name.rpartition(".")[2].isdigit():
        return f"invalid domain {raw!r}: the last label is all digits (no top-level domain is)"
    return _why_invalid(raw, name)
