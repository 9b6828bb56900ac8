"""The daemon's background fetch of `domain_urls`: every list at start and every
`list_refresh` seconds, in a thread of its own, so neither start-up nor the
event loop ever waits on the network.

A fetch that fails (network, HTTP error, timeout, an oversized or garbage body)
keeps the last good copy and says why in the log; a fetched list that differs
from its kept copy calls `on_change`, and the daemon applies it like a reload
(the config loader reads the kept copies).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable, Sequence

from hrneo.config import Config

log = logging.getLogger(__name__)


class ListFetcher:
    """Fetches `urls` into `cache_dir` now and then every `refresh` seconds (0: once),
    each in at most `timeout` seconds and `max_bytes` (listfetch's defaults)."""

    def __init__(
        self,
        urls: Sequence[str],
        cache_dir: str,
        refresh: float,
        on_change: Callable[[], None],
        *,
        timeout: float | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.urls = tuple(dict.fromkeys(urls))  # each once, in order
        self.cache_dir = cache_dir
        self.refresh = refresh
        self.on_change = on_change
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.rounds = 0  # completed rounds, for status and tests
        self._stop = threading.Event()
        self._wake = threading.Event()  # stop, or fetch now (a SIGHUP)
        self._thread = threading.Thread(target=self._run, name="hrneo-lists", daemon=True)

    @property
    def key(self) -> tuple[tuple[str, ...], str, float]:
        """What makes another fetcher necessary on a reload."""
        return (self.urls, self.cache_dir, float(self.refresh))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop between fetches; a fetch in flight ends by its own timeout (the
        thread is a daemon thread: it never holds the process)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=1.0)

    def fetch_now(self) -> None:
        """Start another round at once (after the one in flight)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            changed = self.fetch_all()
            self.rounds += 1
            if changed and not self._stop.is_set():
                log.info("a list from a URL changed: applying it")
                self.on_change()
            # list_refresh 0: no schedule, only fetch_now() starts another round.
            self._wake.wait(self.refresh or None)

    def fetch_all(self) -> bool:
        """One round over every URL; True if any list changed."""
        # Imported here: urllib is a package of its own on routers' small Pythons,
        # needed only by configs with domain_urls.
        from hrneo.listfetch import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, fetch_list

        timeout = DEFAULT_TIMEOUT if self.timeout is None else self.timeout
        max_bytes = DEFAULT_MAX_BYTES if self.max_bytes is None else self.max_bytes
        changed = False
        for url in self.urls:
            if self._stop.is_set():
                break
            try:
                got = fetch_list(url, self.cache_dir, timeout=timeout, max_bytes=max_bytes)
            except Exception:  # a bug in one fetch must not end the fetching
                log.exception("fetching %s failed", url)
                continue
            for w in got.warnings:
                log.warning("%s", w)
            if got.origin == "fetched":
                log.info(
                    "%s: %d domains, %d addresses%s", url, len(got.domains), len(got.networks),
                    " (changed)" if got.changed else "",
                )  # fmt: skip
            changed |= got.changed
        return changed


class UrlLists:
    """The daemon's side: a fetcher for the config's `domain_urls`, which wakes
    the daemon's loop (`sel`) through a pipe when a list changed; `on_change`
    then runs in the loop."""

    def __init__(self, sel: selectors.BaseSelector, on_change: Callable[[], None]) -> None:
        self.sel = sel
        self.on_change = on_change
        self.fetcher: ListFetcher | None = None
        self._pipe: tuple[int, int] | None = None

    def update(self, cfg: Config, *, refetch: bool = False) -> None:
        """Fetch `cfg`'s URLs: a new fetcher only when the URLs, their cache or the
        interval changed (a reload the fetcher asked for changes none of them);
        `refetch` (a SIGHUP) has the same fetcher fetch again at once."""
        urls = [u for p in cfg.policies for u in p.domain_urls]
        key = (tuple(dict.fromkeys(urls)), cfg.list_cache, float(cfg.list_refresh))
        if self.fetcher is not None and self.fetcher.key == key:
            if refetch:
                self.fetcher.fetch_now()
            return
        self.close()
        if not urls:
            return
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self._pipe = (rfd, wfd)
        self.sel.register(rfd, selectors.EVENT_READ, self._woken)

        def changed() -> None:  # in the fetcher's thread
            with contextlib.suppress(OSError):
                os.write(wfd, b"!")

        self.fetcher = ListFetcher(urls, cfg.list_cache, cfg.list_refresh, changed)
        self.fetcher.start()

    def _woken(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.read(self._pipe[0], 256)
        self.on_change()

    def close(self) -> None:
        """Stop fetching, release the pipe."""
        if self.fetcher is not None:
            self.fetcher.stop()
            self.fetcher = None
        if self._pipe is not None:
            rfd, wfd = self._pipe
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(rfd)
            os.close(rfd)
            os.close(wfd)
            self._pipe = None
