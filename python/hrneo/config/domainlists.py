"""A policy's domains in the config: `domains` written inline, `domain_files`
read here line by line, and `domain_urls` from the last good copy the daemon
fetched (no network here). Every domain goes straight into the config's
compiled watchlist, where the first policy that lists a domain keeps it."""

from __future__ import annotations

import ipaddress
import os

import yaml

from hrneo._core import Watchlist
from hrneo.config import values as v
from hrneo.config.addresses import short
from hrneo.config.walker import MAX_ERRORS, Invalid, Walker
from hrneo.domains import normalize_domain
from hrneo.safeio import MAX_LIST_BYTES, FileRefused, iter_lines

Mapping = dict[str, tuple[yaml.Node, yaml.Node]]
# Bad lines of one list file before the rest of it is skipped (a binary file).
MAX_FILE_ERRORS = 20


class DomainSources(Walker):
    """The domain lists of the loader (a base class of it)."""

    base: str  # the config's directory: relative list paths are under it
    list_cache: str  # where the daemon keeps the last good copy of each URL list
    watchlist: Watchlist
    policy_names: dict[int, str]  # policy index -> name, for the messages

    def inline_domains(self, m: Mapping, policy: int) -> None:
        """A policy's `domains`: each item one domain name."""
        if "domains" not in m:
            return
        for dnode in self.sequence(m["domains"][1], "domains"):
            raw = self.scalar(dnode)
            if raw is Invalid:
                continue
            if not isinstance(raw, str):
                self.error(dnode, f"domains: {raw!r} is not a domain name")
                continue
            try:
                dom, warning = normalize_domain(raw)
            except ValueError as e:
                self.error(dnode, str(e))
                continue
            if warning:
                self.warn(dnode, warning)
            self.add_domain(dom, policy, 0, dnode.start_mark.line + 1)

    def domain_files(self, m: Mapping, policy: int) -> list[str]:
        """A policy's `domain_files`, read into the watchlist; returns their paths."""
        files: list[str] = []
        if "domain_files" not in m:
            return files
        for fnode in self.sequence(m["domain_files"][1], "domain_files"):
            raw = self.scalar(fnode)
            if raw is Invalid:
                continue
            if not isinstance(raw, str) or not raw or "\0" in raw:
                self.error(fnode, f"domain_files: {raw!r} is not a path")
                continue
            path = raw if os.path.isabs(raw) else os.path.join(self.base, raw)
            files.append(path)
            self.domain_file(fnode, path, self.watchlist.add_source(path), policy)
        return files

    def domain_urls(self, m: Mapping, policy: int) -> tuple[list[str], list[str]]:
        """A policy's `domain_urls` and the addresses their cached copies list
        (their domains go into the watchlist)."""
        urls: list[str] = []
        nets: list[str] = []
        if "domain_urls" not in m:
            return urls, nets
        for unode in self.sequence(m["domain_urls"][1], "domain_urls"):
            raw = self.scalar(unode)
            if raw is Invalid:
                continue
            try:
                url = v.check_url(raw)
            except (ValueError, TypeError) as e:
                self.error(unode, f"domain_urls: {e}")
                continue
            if url in urls:
                self.warn(unode, f"domain_urls: {url} is listed twice")
            else:
                urls.append(url)
                nets += self.cached_list(unode, url, policy)
        return urls, nets

    def cached_list(self, node: yaml.Node, url: str, policy: int) -> list[str]:
        """The last good copy of a URL list (no network here: the daemon fetches in
        the background): its domains into the watchlist, its addresses returned."""
        # Imported here: listfetch reads lists with the importer's parser, which
        # imports this package.
        from hrneo.listfetch import load_cached

        got = load_cached(url, self.list_cache)
        for w in got.warnings:
            self.warn(node, f"domain_urls: {w}")
        src = self.watchlist.add_source(url)
        for i, dom in enumerate(got.domains):
            self.add_domain(dom, policy, src, i + 1)
        nets = (ipaddress.ip_network(n, strict=False) for n in got.networks)
        return [short(n) for n in nets]

    def add_domain(self, domain: str, policy: int, source: int, line: int) -> None:
        """Into the watchlist; a domain another policy has already stays with it."""
        first = self.watchlist.add(domain, policy, source, line)
        if first is None or first[0] == policy:
            return  # new, or a repeat inside the policy (it changes nothing)
        other, src, at = first
        sources = self.watchlist.sources
        this, that = (self.policy_names.get(i, f"#{i + 1}") for i in (policy, other))
        self.warnings.append(
            f"{sources[source]}:{line}: domain {domain!r} of policy {this!r} is already in "
            f"policy {that!r} ({sources[src]}:{at}); {that!r} keeps it"
        )

    def domain_file(self, fnode: yaml.Node, path: str, src: int, policy: int) -> None:
        """Every line of list file `path` into the watchlist, `file:line` for bad ones."""
        bad = 0
        try:
            # Streamed line by line: a 100k-line list never sits in memory twice.
            for lineno, text, problem in iter_lines(path, MAX_LIST_BYTES):
                if text is None:
                    self.add_error(f"{path}:{lineno}: {problem}")
                    bad += 1
                elif not self._domain_line(path, lineno, text, src, policy):
                    bad += 1
                if bad >= MAX_FILE_ERRORS:
                    self.add_error(f"{path}:{lineno}: {bad} bad lines: the rest is not read")
                    return
        except FileRefused as e:
            self.error(fnode, f"domain_files: {e}")
        except OSError as e:
            self.error(fnode, f"domain_files: cannot read {path}: {e.strerror or e}")
        except ValueError as e:  # a character the file system cannot take
            self.error(fnode, f"domain_files: cannot read {path!r}: {e}")

    def _domain_line(self, path: str, lineno: int, text: str, src: int, policy: int) -> bool:
        """One line of a list file; False if it is not a domain."""
        raw = text.split("#", 1)[0].strip()
        if not raw:
            return True
        try:
            dom, warning = normalize_domain(raw)
        except ValueError as e:
            self.add_error(f"{path}:{lineno}: {e}")
            return False
        if warning and len(self.warnings) < MAX_ERRORS:
            self.warnings.append(f"{path}:{lineno}: {warning}")
        self.add_domain(dom, policy, src, lineno)
        return True
