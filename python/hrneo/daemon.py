"""The event loop: DNS answers in, set entries (and conntrack flushes) out.

One `selectors` loop serves the NFLOG socket, the control socket and a
self-pipe for signals. Each wake-up drains what the kernel queued, matches the
answers, sends ONE batch per set and then ONE conntrack flush for the new
addresses of `reconnect` policies. There is no queue of our own: under overload
the kernel's socket buffer overflows and the reader counts the drops.

The core (reader, batches, flusher, set helpers) comes through a
:class:`Backend`, so tests can run the whole daemon on fakes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any, Callable, Protocol

from hrneo.config import Config, ConfigError, Policy, load_config
from hrneo.control import ControlServer
from hrneo.firewall import Firewall, FirewallError, describe
from hrneo.watchlist import Watchlist

log = logging.getLogger(__name__)

MAX_EVENTS = 4096  # per read; the selector wakes us again if more is queued
RATE_WINDOW = 5.0  # seconds over which events/s is measured
# After a conntrack flush the worker rests FLUSH_REST_RATIO times as long as it
# took (at most FLUSH_REST_MAX s) before the next one: under load the dumps (pure
# kernel CPU, ~10 ms each) then use at most a third of a core, and more addresses
# share each. When idle the first flush starts at once.
FLUSH_REST_RATIO = 2.0
FLUSH_REST_MAX = 0.05


# ------------------------------------------------------------------ core interfaces


class EventLike(Protocol):
    """What the daemon reads of a DnsEvent."""

    is_response: bool
    rcode: int
    qname: str
    chain: list[str]
    addresses: list[str]


class ReaderLike(Protocol):
    def fileno(self) -> int: ...
    def read(self, max_events: int = ..., timeout: float | None = ...) -> Sequence[Any]: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class BatchLike(Protocol):
    def add(self, ip: str) -> None: ...
    def extend(self, ips: Iterable[str]) -> None: ...
    def commit(self) -> list[str]: ...
    def clear(self) -> None: ...


class FlusherLike(Protocol):
    def flush(self, ips: Iterable[str]) -> int: ...


class Backend(Protocol):
    """The compiled core, or fakes in tests."""

    def open_reader(self, group: int) -> ReaderLike: ...
    def open_batch(self, set_name: str, timeout: int | None) -> BatchLike: ...
    def open_flusher(self, track: bool = False) -> FlusherLike: ...
    def set_exists(self, name: str) -> bool: ...
    def set_create(
        self, name: str, settype: str, family: str, timeout: int | None, maxelem: int | None
    ) -> None: ...
    def set_info(self, name: str) -> dict[str, Any]: ...


class CoreBackend:
    """The real core: hrneo.ipset (netlink, with the CLI fallback) and hrneo._core."""

    def __init__(self) -> None:
        # Imported here so that the daemon module (and its tests) load without the core.
        from hrneo import _core, ipset

        self._core = _core
        self._ipset = ipset

    def open_reader(self, group: int) -> ReaderLike:
        return self._core.NflogReader(group)

    def open_batch(self, set_name: str, timeout: int | None) -> BatchLike:
        return self._ipset.open_batch(set_name, timeout=timeout)

    def open_flusher(self, track: bool = False) -> FlusherLike:
        return self._ipset.open_conntrack_flusher(track=track)

    def set_exists(self, name: str) -> bool:
        return self._ipset.exists(name)

    def set_create(
        self, name: str, settype: str, family: str, timeout: int | None, maxelem: int | None
    ) -> None:
        self._ipset.create(name, settype, family, timeout=timeout, maxelem=maxelem, exist_ok=True)

    def set_info(self, name: str) -> dict[str, Any]:
        return dict(self._ipset.info(name))


# ------------------------------------------------------------------ conntrack worker


FlushDone = Callable[[list[str], dict[str, int], int | BaseException], None]


class FlushWorker:
    """One thread that runs ConntrackFlusher.flush off the event loop.

    A flush costs a full conntrack dump (~10 ms even for an empty table, the
    kernel walks a hash shared by every namespace), far too slow for the hot
    path. The loop `submit()`s new addresses AFTER their ipset commit, so an
    address's entries are only ever deleted once it is in its set. Everything
    submitted while a flush runs is coalesced into the next single call: at most
    one flush in flight and one pending, whatever the load. `close()` flushes
    what is pending, then joins (bounded).

    `done(ips, share, result)` runs in the worker thread after each call, with
    the entry count or the exception; `share` is policy name -> address count.
    """

    def __init__(self, flusher: FlusherLike, done: FlushDone) -> None:
        self._flusher = flusher
        self._done = done
        self._cond = threading.Condition()
        self._ips: list[str] = []
        self._share: dict[str, int] = {}
        self._busy = False  # a flush is running
        self._closing = False
        self._rest_until = 0.0  # monotonic time before which no new flush starts
        self.calls = 0  # flush calls made (for status and tests)
        self._thread = threading.Thread(target=self._run, name="hrneo-conntrack", daemon=True)
        self._thread.start()

    def submit(self, ips: Sequence[str], share: dict[str, int]) -> None:
        """Queue addresses (already in their sets) for the next flush; never blocks long."""
        with self._cond:
            self._ips.extend(ips)
            for name, n in share.items():
                self._share[name] = self._share.get(name, 0) + n
            self._cond.notify()

    def pending(self) -> int:
        """Addresses waiting for the next flush."""
        with self._cond:
            return len(self._ips)

    def outstanding(self) -> int:
        """Addresses waiting or being flushed right now (0: every submitted flush is done)."""
        with self._cond:
            return len(self._ips) + (1 if self._busy else 0)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._ips and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._ips) or self._closing)
                while not self._closing:  # rest, unless stopping
                    left = self._rest_until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._ips:
                    return  # closing, and nothing left to flush
                ips, share = self._ips, self._share
                self._ips, self._share = [], {}
                self._busy = True
            result: int | BaseException
            t0 = time.monotonic()
            try:
                result = self._flusher.flush(ips)  # releases the GIL for the dump
            except Exception as e:  # noqa: BLE001 - reported to the daemon, the worker lives on
                result = e
            took = time.monotonic() - t0
            self._rest_until = t0 + took + min(took * FLUSH_REST_RATIO, FLUSH_REST_MAX)
            self.calls += 1
            try:
                self._done(ips, share, result)
            except Exception:  # a bug in the handler must not kill the worker
                log.exception("conntrack worker: result handler failed")
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> bool:
        """Flush what is pending, stop the thread; False if it did not end in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("conntrack worker did not stop within %.1f s", timeout)
            return False
        return True


# ------------------------------------------------------------------ state


class DaemonError(RuntimeError):
    """The daemon cannot start (sets, rules or sockets)."""


@dataclass
class PolicyStats:
    """Counters of one policy (kept across reloads by policy name)."""

    matched: int = 0  # answers whose chain matched this policy
    added: int = 0  # addresses sent to its sets
    new: int = 0  # of those, not present before
    flushed: int = 0  # conntrack entries deleted for its new addresses
    errors: int = 0  # failed commits
    v6_dropped: int = 0  # AAAA addresses with no ipset6 to go to


@dataclass(frozen=True)
class SetPlan:
    """How one kernel set is fed."""

    policy: int
    family: str  # "inet" / "inet6"
    timeout: int | None  # for learned entries: None = the set's default / no timeout
    static_timeout: int | None  # 0 = permanent in a timeout set


class Daemon:
    """hrneo's daemon; `run()` is the whole life, the other methods are its parts."""

    def __init__(
        self,
        config: Config,
        *,
        backend: Backend | None = None,
        firewall: Firewall | None = None,
        loader: Callable[[str], tuple[Config, list[str]]] = load_config,
        control: bool = True,
    ) -> None:
        self.config = config
        self.backend: Backend = backend if backend is not None else CoreBackend()
        self.firewall = firewall if firewall is not None else Firewall(config.firewall)
        self.loader = loader
        self.use_control = control
        self.watchlist = self._compile(config)
        self.plans: dict[str, SetPlan] = {}
        self.batches: dict[str, BatchLike] = {}
        self.flusher: FlusherLike | None = None
        self.flush_worker: FlushWorker | None = None
        self._ct_events_fd: int | None = None  # the flusher's event socket, in the selector
        self.reader: ReaderLike | None = None
        self.control: ControlServer | None = None
        self.sel = selectors.DefaultSelector()
        self.pstats: dict[str, PolicyStats] = {p.name: PolicyStats() for p in config.policies}
        self.counters = {
            "events": 0, "answers": 0, "queries_ignored": 0, "rcode_skipped": 0,
            "commit_errors": 0, "flush_errors": 0, "flushed": 0, "read_errors": 0,
            "reconciled": 0,
        }  # fmt: skip
        self.started = time.time()
        self.last_reload: dict[str, Any] | None = None
        self.rate = 0.0
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self._stopping = False
        self._reload_wanted = False
        self._next_recheck = 0.0
        self._firewall_on = False

    # -- setup -----------------------------------------------------------------
    @staticmethod
    def _compile(cfg: Config) -> Watchlist:
        t = time.monotonic()
        wl = Watchlist.from_config(cfg)
        for dup in wl.duplicates:
            log.warning("%s", dup)
        log.info(
            "watchlist: %d domains in %d policies (%.0f ms)",
            len(wl), len(cfg.policies), (time.monotonic() - t) * 1000,
        )  # fmt: skip
        return wl

    def _plan_set(self, pi: int, pol: Policy, name: str, family: str) -> SetPlan:
        """Create the set if missing and decide the timeouts to send with adds."""
        be = self.backend
        if not be.set_exists(name):
            be.set_create(name, "hash:net", family, pol.timeout or None, pol.maxelem)
            log.info("created set %s (hash:net %s timeout %s)", name, family, pol.timeout)
        info = be.set_info(name)
        if info.get("family") not in (None, family):
            raise DaemonError(
                f"set {name} of policy {pol.name} is {info.get('family')}, expected {family}"
            )
        set_timeout = info.get("timeout")
        if set_timeout is None:
            if pol.timeout:
                log.warning(
                    "set %s has no timeout support: entries of %s stay until removed",
                    name, pol.name,
                )  # fmt: skip
            return SetPlan(pi, family, None, None)
        if set_timeout != pol.timeout:
            log.warning(
                "set %s has default timeout %s, policy %s says %s: using the policy's",
                name, set_timeout, pol.name, pol.timeout,
            )  # fmt: skip
        # In a timeout set, timeout 0 means permanent (static entries, timeout: 0).
        return SetPlan(pi, family, pol.timeout, 0)

    def _prepare_sets(self, cfg: Config) -> tuple[dict[str, SetPlan], dict[str, BatchLike]]:
        """Sets, plans and batches for `cfg`, reusing batches whose plan is unchanged."""
        plans: dict[str, SetPlan] = {}
        batches: dict[str, BatchLike] = {}
        for pi, pol in enumerate(cfg.policies):
            for name, family in ((pol.ipset, "inet"), (pol.ipset6, "inet6")):
                if name is None:
                    continue
                plan = self._plan_set(pi, pol, name, family)
                plans[name] = plan
                old = self.plans.get(name)
                if name in self.batches and old is not None and old.timeout == plan.timeout:
                    batches[name] = self.batches[name]
                else:
                    batches[name] = self.backend.open_batch(name, plan.timeout)
                self._add_static(pol, name, family, plan)
        return plans, batches

    def _add_static(self, pol: Policy, name: str, family: str, plan: SetPlan) -> None:
        want6 = family == "inet6"
        entries = [s for s in pol.static if (":" in s) == want6]
        if not entries:
            return
        batch = self.backend.open_batch(name, plan.static_timeout)
        for e in entries:
            batch.add(e)
        new = batch.commit()
        log.info("%s: %d static entries in %s (%d new)", pol.name, len(entries), name, len(new))

    def start(self) -> None:
        """Sets, rules, NFLOG socket, control socket. Raises DaemonError/OSError."""
        cfg = self.config
        self.plans, self.batches = self._prepare_sets(cfg)
        self._open_flusher(cfg)
        if cfg.firewall.manage_rules:
            self._firewall_on = True
            try:
                self.firewall.start(cfg)
            except FirewallError as e:
                self.firewall.stop()
                raise DaemonError(str(e)) from None
        self.reader = self.backend.open_reader(cfg.nflog_group)
        self.sel.register(self.reader.fileno(), selectors.EVENT_READ, self._on_nflog)
        if self.use_control:
            self.control = ControlServer(cfg.control_socket, self.command)
            self.control.register(self.sel)
        self._next_recheck = time.monotonic() + cfg.firewall.recheck_interval
        log.info(
            "hrneo running: nflog group %d, %d policies, control socket %s",
            cfg.nflog_group, len(cfg.policies), cfg.control_socket if self.control else "off",
        )  # fmt: skip

    def _open_flusher(self, cfg: Config) -> None:
        if self.flush_worker is not None or not any(p.reconnect for p in cfg.policies):
            return
        if self.flusher is None:
            try:
                self.flusher = self.backend.open_flusher(track=cfg.conntrack_events)
            except OSError as e:
                log.error("conntrack unavailable (%s): reconnect is off", e)
                return
        if self._ct_events_fd is None:
            self._watch_ct_events()
        self.flush_worker = FlushWorker(self.flusher, self._flush_done)

    def _watch_ct_events(self) -> None:
        """Put a tracking flusher's event socket in the selector (the CLI fallback has none)."""
        fileno = getattr(self.flusher, "fileno", None)
        fd = fileno() if callable(fileno) else None
        if isinstance(fd, int) and fd >= 0:
            self.sel.register(fd, selectors.EVENT_READ, self._on_ct_events)
            self._ct_events_fd = fd
            log.info("conntrack: flushes use an index kept from conntrack events")
        elif self.config.conntrack_events:
            log.info("conntrack: no conntrack events here: each flush dumps the table")

    def _on_ct_events(self) -> None:
        """Drain the conntrack event socket, so it never overflows between flushes
        (an overflow is safe, but costs the next flush a full table dump).

        Called on the loop thread, while the FlushWorker may be flushing: the flusher
        serialises the two on its own lock with the GIL released, so at worst this
        waits for one flush (about a millisecond from the index; a fallback dump,
        rare, tens of ms). Handing the drain to the worker instead would leave the
        level-triggered fd readable, and the selector spinning, until the worker ran.
        """
        poll = getattr(self.flusher, "poll_events", None)
        if poll is None:
            return
        try:
            poll()
        except OSError as e:
            log.warning("conntrack events: %s", e)

    # -- the hot path ----------------------------------------------------------
    def process(self, events: Iterable[EventLike]) -> None:
        """Match a batch of events; one commit per set, then one conntrack flush."""
        wl = self.watchlist
        policies = self.config.policies
        # set -> address -> the question name that brought it (first wins)
        pending: dict[str, dict[str, str]] = {}
        # policy index -> its (v4, v6) dicts of `pending`, made on first use
        targets: dict[int, tuple[dict[str, str], dict[str, str] | None]] = {}
        # The per-event work is kept to a few dict operations: counters are
        # summed locally, and a question name (no CNAME) is matched once per batch.
        seen: dict[str, int] = {}  # name -> policy index, -1 if unwatched
        matched: dict[int, int] = {}
        v6_dropped: dict[int, int] = {}
        n_events = n_queries = n_rcode = 0
        for ev in events:
            n_events += 1
            if not ev.is_response:
                # A spoofed query may carry answer records: it must add nothing.
                n_queries += 1
                continue
            if ev.rcode != 0:
                n_rcode += 1
                continue
            chain = ev.chain
            if len(chain) == 1:
                pi = seen.get(chain[0])
                if pi is None:
                    pi = seen[chain[0]] = wl.policy_of(chain[0])
            else:
                m = wl.match_chain(chain)
                pi = -1 if m is None else m.policy
            if pi < 0:
                continue
            matched[pi] = matched.get(pi, 0) + 1
            t = targets.get(pi)
            if t is None:
                pol = policies[pi]
                t = targets[pi] = (
                    pending.setdefault(pol.ipset, {}),
                    None if pol.ipset6 is None else pending.setdefault(pol.ipset6, {}),
                )
            v4, v6 = t
            qname = ev.qname
            for addr in ev.addresses:
                if ":" in addr:
                    if v6 is None:
                        v6_dropped[pi] = v6_dropped.get(pi, 0) + 1
                    elif addr not in v6:
                        v6[addr] = qname
                elif addr not in v4:
                    v4[addr] = qname
        c = self.counters
        c["events"] += n_events
        c["answers"] += n_events - n_queries
        c["queries_ignored"] += n_queries
        c["rcode_skipped"] += n_rcode
        for pi, n in matched.items():
            self.pstats[policies[pi].name].matched += n
        for pi, n in v6_dropped.items():
            self.pstats[policies[pi].name].v6_dropped += n
        if not pending:
            return
        to_flush: list[str] = []
        flush_share: dict[str, int] = {}
        info = log.isEnabledFor(logging.INFO)
        for setname, addrs in pending.items():
            if not addrs:
                continue
            plan = self.plans[setname]
            pol = policies[plan.policy]
            st = self.pstats[pol.name]
            new = self._commit(setname, addrs, pol, st)
            st.added += len(addrs)
            st.new += len(new)
            if info:
                for a in new:
                    log.info("%s +%s %s", pol.name, a, addrs.get(a, "?"))
            if log.isEnabledFor(logging.DEBUG):
                newset = set(new)
                for a, name in addrs.items():
                    if a not in newset:
                        log.debug("%s =%s %s", pol.name, a, name)
            if new and pol.reconnect and self.flush_worker is not None:
                to_flush.extend(new)
                flush_share[pol.name] = flush_share.get(pol.name, 0) + len(new)
        if to_flush:
            # After the commits: the worker deletes entries of addresses already in their sets.
            assert self.flush_worker is not None
            self.flush_worker.submit(to_flush, flush_share)

    def _commit(
        self, setname: str, addrs: dict[str, str], pol: Policy, st: PolicyStats
    ) -> list[str]:
        """Commit one set's batch; on error recreate the set and retry once.

        A commit that fails for some entries (set full, ...) still reports, on the
        exception's `new`, the ones that went in as new: they count (and get their
        conntrack flush) like any other.
        """
        went_in: list[str] = []
        for attempt in (1, 2):
            batch = self.batches[setname]
            try:
                batch.extend(addrs)
                return went_in + [a for a in batch.commit() if a not in went_in]
            except (OSError, ValueError) as e:
                st.errors += 1
                self.counters["commit_errors"] += 1
                went_in += [a for a in getattr(e, "new", None) or () if a not in went_in]
                with contextlib.suppress(Exception):
                    batch.clear()
                if attempt == 2:
                    log.error(
                        "set %s: %s; of %d address(es), %d went in as new",
                        setname, e, len(addrs), len(went_in),
                    )  # fmt: skip
                    return went_in
                log.error("set %s: %s; recreating it and retrying once", setname, e)
                try:
                    pi = self.plans[setname].policy
                    plan = self._plan_set(pi, pol, setname, self.plans[setname].family)
                    self.plans[setname] = plan
                    self.batches[setname] = self.backend.open_batch(setname, plan.timeout)
                    self._add_static(pol, setname, plan.family, plan)
                except (OSError, ValueError, DaemonError) as e2:
                    log.error("set %s: cannot recreate: %s", setname, e2)
                    return went_in
        return went_in

    def _flush_done(
        self, ips: list[str], share: dict[str, int], result: int | BaseException
    ) -> None:
        """The flush worker's report (runs in its thread; only it writes these counters)."""
        if isinstance(result, BaseException):
            self.counters["flush_errors"] += 1
            log.error("conntrack flush of %d address(es) failed: %s", len(ips), result)
            return
        n = result
        self.counters["flushed"] += n
        if n:
            log.debug("conntrack: %d entries deleted for %d new address(es)", n, len(ips))
        # One flush serves every policy of the coalesced wake-ups; split its count by
        # their share of the addresses (nearly always a single policy).
        left = n
        names = list(share)
        total = sum(share.values()) or 1
        for name in names[1:]:
            part = n * share[name] // total
            self.pstats[name].flushed += part
            left -= part
        self.pstats[names[0]].flushed += left

    def _on_nflog(self) -> None:
        assert self.reader is not None
        try:
            events = self.reader.read(max_events=MAX_EVENTS, timeout=0)
        except OSError as e:
            self.counters["read_errors"] += 1
            log.error("nflog read: %s", e)
            return
        if events:
            self.process(events)

    # -- reload ----------------------------------------------------------------
    def reload(self) -> bool:
        """Load the config again; apply it if valid, else keep the running one."""
        path = self.config.path
        now = time.time()
        try:
            cfg, warnings = self.loader(path)
        except ConfigError as e:
            for line in e.errors:
                log.error("%s", line)
            msg = f"new config rejected, keeping the old one: {e.errors[0] if e.errors else e}"
            log.error("%s", msg)
            self.last_reload = {"time": now, "ok": False, "message": msg}
            return False
        for w in warnings:
            log.warning("%s", w)
        try:
            wl = self._compile(cfg)
            plans, batches = self._prepare_sets(cfg)
        except (OSError, ValueError, DaemonError) as e:
            msg = f"reload failed, keeping the old config: {e}"
            log.error("%s", msg)
            self.last_reload = {"time": now, "ok": False, "message": msg}
            return False
        old = self.config
        if cfg.firewall.manage_rules:
            try:
                self.firewall.apply(cfg)
                self._firewall_on = True
            except FirewallError as e:
                log.error("reload: %s", e)
        elif self._firewall_on:
            self.firewall.stop()
            self._firewall_on = False
        if cfg.nflog_group != old.nflog_group and self.reader is not None:
            self._swap_reader(cfg.nflog_group)
        if cfg.control_socket != old.control_socket:
            log.warning("control_socket change takes effect at the next restart")
        if cfg.conntrack_events != old.conntrack_events and self.flusher is not None:
            log.warning("conntrack_events change takes effect at the next restart")
        # Swap between batches: the loop calls reload only between callbacks.
        self.config, self.watchlist, self.plans, self.batches = cfg, wl, plans, batches
        for p in cfg.policies:
            self.pstats.setdefault(p.name, PolicyStats())
        self._open_flusher(cfg)
        self._next_recheck = time.monotonic() + cfg.firewall.recheck_interval
        msg = f"reloaded: {len(cfg.policies)} policies, {len(wl)} domains"
        log.info("%s", msg)
        self.last_reload = {"time": now, "ok": True, "message": msg}
        return True

    def _swap_reader(self, group: int) -> None:
        assert self.reader is not None
        new = self.backend.open_reader(group)
        self._on_nflog()  # what the old group already queued
        self.sel.unregister(self.reader.fileno())
        self.reader.close()
        self.reader = new
        self.sel.register(new.fileno(), selectors.EVENT_READ, self._on_nflog)
        log.info("now reading nflog group %d", group)

    # -- status ----------------------------------------------------------------
    def command(self, cmd: str) -> Any:
        """Control socket commands."""
        if cmd == "status":
            return self.status()
        return {"error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        """Counters and state, as the control socket reports them."""
        self._update_rate(force=False)
        reader = self.reader.stats() if self.reader is not None else {}
        return {
            "pid": os.getpid(),
            "config": self.config.path,
            "nflog_group": self.config.nflog_group,
            "uptime": time.time() - self.started,
            "events_per_s": round(self.rate, 1),
            **self.counters,
            # 0 once every conntrack flush handed to the worker so far has run.
            "flush_pending": self.flush_worker.outstanding() if self.flush_worker else 0,
            "dropped": reader.get("dropped", 0),
            "malformed": reader.get("malformed", 0),
            "reader": reader,
            "last_reload": self.last_reload,
            "firewall": {
                "managed": self._firewall_on,
                "items": len(self.firewall.items),
                "missing": sorted(describe(i) for i in self.firewall.missing),
            },
            "policies": [
                {
                    "name": p.name,
                    "ipset": p.ipset,
                    "ipset6": p.ipset6,
                    "domains": len(p.domains),
                    **asdict(self.pstats[p.name]),
                }
                for p in self.config.policies
            ],
        }

    def _update_rate(self, force: bool) -> None:
        now = time.monotonic()
        dt = now - self._rate_t
        if dt >= RATE_WINDOW or (force and dt > 0):
            self.rate = (self.counters["events"] - self._rate_n) / dt
            self._rate_t, self._rate_n = now, self.counters["events"]

    # -- loop ------------------------------------------------------------------
    def handle_signal(self, signum: int) -> None:
        """SIGHUP: reload after the current batch; SIGTERM/SIGINT: stop."""
        if signum == signal.SIGHUP:
            self._reload_wanted = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self._stopping = True

    def step(self, max_wait: float = 1.0) -> None:
        """One loop iteration: wait for work, run the callbacks, timers, reload."""
        interval = self.config.firewall.recheck_interval
        wait = max_wait
        if interval and self._firewall_on:
            wait = max(0.0, min(wait, self._next_recheck - time.monotonic()))
        for key, _mask in self.sel.select(wait):
            key.data()
            if self._stopping:
                return
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload()
        now = time.monotonic()
        if interval and self._firewall_on and now >= self._next_recheck:
            self._next_recheck = now + interval
            self.counters["reconciled"] += self.firewall.reconcile()
        if self.control is not None:
            self.control.expire()
        self._update_rate(force=False)

    def stop(self) -> None:
        """Undo start: rules out, sockets closed. Sets stay (the kernel keeps the state)."""
        if self.flush_worker is not None:
            # Pending addresses are already in their sets: flush them before leaving.
            self.flush_worker.close(timeout=5.0)
            self.flush_worker = None
        if self._ct_events_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self._ct_events_fd)
            self._ct_events_fd = None
        if self._firewall_on:
            self.firewall.stop()
            self._firewall_on = False
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.reader is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.reader.fileno())
            self.reader.close()
            self.reader = None
        log.info("hrneo stopped")

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, stop. Returns the exit code."""
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            pass  # the wake-up fd carries the number into the loop

        old_handlers = {s: signal.signal(s, on_signal) for s in caught}
        old_fd = signal.set_wakeup_fd(wfd)
        try:
            self.sel.register(rfd, selectors.EVENT_READ, lambda: self._on_wakeup(rfd))
            self.start()
            while not self._stopping:
                self.step()
        finally:
            self.stop()
            signal.set_wakeup_fd(old_fd)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(rfd)
            os.close(rfd)
            os.close(wfd)
        return 0

    def _on_wakeup(self, rfd: int) -> None:
        try:
            data = os.read(rfd, 64)
        except BlockingIOError:
            return
        for signum in data:
            self.handle_signal(signum)
