"""Lists from URLs (`domain_urls`): fetch, check, keep the last good copy on disk.

:func:`fetch_list` never raises for network or server trouble: a failed fetch,
an oversized body, or a body that is not a list (an HTML error page, JSON,
binary data, mostly unparsable lines) gives the last good copy from the cache
directory with a warning, or nothing with a warning when there is no copy yet.
A good body replaces the cached copy atomically (temporary file + rename).

Lists are read as `hrneo import list` reads them: names, `domain:`/`full:`
v2fly rules, and addresses or networks (returned apart, for `static`-like use).

fetch_list blocks for up to `timeout` seconds: call it from a worker thread,
never from the event loop. :func:`load_cached` reads the kept copy only, so a
daemon can start with it at once and fetch in the background.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from hrneo.domains import address_of, normalize_domain
from hrneo.importer.lists import NAME, ListNotes, list_entries

DEFAULT_CACHE_DIR = "/opt/var/lib/hrneo/lists"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
_CHUNK = 64 * 1024
_USER_AGENT = "hrneo-listfetch"


@dataclass(frozen=True)
class FetchResult:
    """What a fetch yields; `origin` is "fetched", "cache" or "none"."""

    url: str
    domains: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()  # addresses and networks of the list
    origin: str = "none"
    # True when the entries differ from the cached copy the last call left (a
    # changed list applies like a reload; an unchanged one needs nothing).
    changed: bool = False
    warnings: tuple[str, ...] = ()


class NotAList(ValueError):
    """The body is not a domain list; the message says why."""


def cache_path(cache_dir: str, url: str) -> str:
    """Where the last good copy of `url` is kept."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]
    return os.path.join(cache_dir, f"{digest}.list")


def parse_list_text(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(domains, networks) of a list body; NotAList if it is not one."""
    head = text.lstrip()[:1]
    if head in ("<", "{", "["):
        raise NotAList("it looks like HTML/XML or JSON, not one entry per line")
    if "\0" in text:
        raise NotAList("it holds binary data")
    domains: dict[str, None] = {}
    networks: dict[str, None] = {}
    bad = 0
    lines = enumerate(text.splitlines(), 1)
    for _, kind, value in list_entries(lines, ListNotes()):
        if kind != NAME:
            bad += 1
            continue
        addr = address_of(value)
        if addr is not None:
            networks[addr[0]] = None
            continue
        try:
            domains[normalize_domain(value)[0]] = None
        except ValueError:
            bad += 1
    good = len(domains) + len(networks)
    if good == 0:
        raise NotAList("it has no names or addresses")
    if bad > good:
        raise NotAList(f"{bad} of its {bad + good} entries are neither names nor addresses")
    return tuple(domains), tuple(networks)


def _read_cache(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _write_cache(path: str, text: str) -> None:
    """Replace `path` with `text` whole or not at all; raises OSError."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fetch-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _download(url: str, timeout: float, max_bytes: int) -> bytes:
    """The body of `url`; raises OSError / HTTPException / ValueError on any trouble."""
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    # fetch_list checked the scheme: no file:// or ftp:// URL gets here.
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        final = urllib.parse.urlsplit(resp.geturl()).scheme
        if final not in ("http", "https"):
            raise ValueError(f"redirected to a {final}: URL")
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise ValueError(f"it is {int(length)} bytes, more than the {max_bytes} allowed")
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not complete after {timeout:g} s")
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"it is more than the {max_bytes} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)


def _scheme(url: str) -> str | None:
    """The URL's scheme, None if it does not parse ("http://[::1/x")."""
    try:
        return urllib.parse.urlsplit(url).scheme
    except ValueError:
        return None


def fetch_list(
    url: str,
    cache_dir: str = DEFAULT_CACHE_DIR,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FetchResult:
    """Fetch `url`; on any failure fall back to the cached copy (see the module docstring)."""
    path = cache_path(cache_dir, url)
    old = _read_cache(path)
    why: str
    scheme = _scheme(url)
    if scheme is None:
        why = "not a URL"
    elif scheme not in ("http", "https"):
        why = f"not an http(s) URL ({scheme or 'no'} scheme)"
    else:
        try:
            body = _download(url, timeout, max_bytes)
            text = body.decode("utf-8")
            domains, networks = parse_list_text(text)
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code} {e.reason}"
        except urllib.error.URLError as e:
            why = f"cannot fetch: {e.reason}"
        except UnicodeDecodeError:
            why = "not a list: it is not UTF-8 text"
        except NotAList as e:
            why = f"not a list: {e}"
        except (OSError, http.client.HTTPException, ValueError) as e:
            # TimeoutError is an OSError; ValueError: size cap, odd redirects.
            why = str(e) or type(e).__name__
        else:
            warnings: list[str] = []
            if text != old:
                try:
                    _write_cache(path, text)
                except OSError as e:
                    warnings.append(f"{url}: fetched, but the copy is not kept: {e}")
            return FetchResult(
                url, domains, networks, "fetched", changed=text != old, warnings=tuple(warnings)
            )
    return _from_cache(url, path, old, why)


def load_cached(url: str, cache_dir: str = DEFAULT_CACHE_DIR) -> FetchResult:
    """The last good copy of `url`, without any network access (for a fast start).

    `origin` is "cache", or "none" (with a warning) when there is no usable copy.
    """
    path = cache_path(cache_dir, url)
    old = _read_cache(path)
    if old is None:
        return FetchResult(url, warnings=(f"{url}: not fetched yet; no copy kept",))
    try:
        domains, networks = parse_list_text(old)
    except NotAList as e:
        return FetchResult(url, warnings=(f"{url}: the kept copy {path} is bad: {e}",))
    return FetchResult(url, domains, networks, "cache")


def _from_cache(url: str, path: str, old: str | None, why: str) -> FetchResult:
    """The last good copy, with a warning that says why it is used."""
    if old is None:
        return FetchResult(url, warnings=(f"{url}: {why}; no earlier copy, the list is empty",))
    try:
        domains, networks = parse_list_text(old)
    except NotAList as e:  # the copy was good when written: only a damaged disk gets here
        return FetchResult(url, warnings=(f"{url}: {why}; the kept copy {path} is bad: {e}",))
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    return FetchResult(
        url, domains, networks, "cache", warnings=(f"{url}: {why}; using the copy of {when}",)
    )
