"""The compiled hot path, built from a config: the thin Python side of the
core's ``Plan`` and ``Pipeline``.

Everything per DNS answer happens in Rust with the GIL released: read the
NFLOG socket, decode, match the watchlist, one commit per set, conntrack
flushes in the core's own thread. Python builds a plan from the config,
hands it over (at start, and at each reload), and reads counters and log
lines back.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

from hrneo import _core
from hrneo.backends import PipelineLike, PlanLike
from hrneo.config import Config

log = logging.getLogger(__name__)


ConntrackMode = Literal["events", "dump", "off"]


def conntrack_mode(cfg: Config) -> ConntrackMode:
    """ "events" (index kept from conntrack events), "dump" (one table dump per
    flush) or "off" (no policy reconnects)."""
    if not any(p.reconnect for p in cfg.policies):
        return "off"
    return "events" if cfg.conntrack_events else "dump"


def capture_mode(cfg: Config) -> Literal["nflog", "nfqueue"]:
    """The config's capture, as the core names it."""
    return "nfqueue" if cfg.capture == "nfqueue" else "nflog"


class CompiledCore:
    """The real :class:`~hrneo.backends.CoreFactory`: ipsets or nftables sets over netlink."""

    def __init__(self, backend: Literal["ipset", "nftables"] = "ipset") -> None:
        self.backend: Literal["ipset", "nftables"] = backend

    def plan(self, cfg: Config) -> PlanLike:
        """The config's plan; its sets are not touched until ``prepare()``."""
        return _core.Plan(cfg.watchlist, cfg.policies, backend=self.backend)

    def pipeline(self, plan: PlanLike, cfg: Config) -> PipelineLike:
        """Bind the config's NFLOG group or queue, start the conntrack thread, take `plan` over."""
        core_plan = cast(_core.Plan, plan)
        p = _core.Pipeline(
            core_plan,
            nflog_group=cfg.nflog_group,
            conntrack=conntrack_mode(cfg),
            capture=capture_mode(cfg),
            nfqueue_num=cfg.nfqueue_num,
            hold_max_ms=cfg.hold_max_ms,
        )
        return cast(PipelineLike, p)
