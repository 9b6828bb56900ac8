"""The config: YAML in, a validated :class:`Config` (with its compiled
watchlist) out, or a :class:`ConfigError` listing every `file:line` problem."""

from hrneo.config.loader import load_config
from hrneo.config.model import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_CONFIG_PATH,
    DEFAULT_DNS_CHAINS,
    DEFAULT_LIST_REFRESH,
    DEFAULT_NFLOG_GROUP,
    DEFAULT_RECHECK_INTERVAL,
    DEFAULT_RULE_PRIORITY,
    DEFAULT_SOCKET_PATH,
    DEFAULT_TIMEOUT,
    Config,
    FirewallConfig,
    Policy,
    Route,
)
from hrneo.config.values import check_url, parse_mark
from hrneo.domains import normalize_domain
from hrneo.errors import ConfigError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DNS_CHAINS",
    "DEFAULT_LIST_REFRESH",
    "DEFAULT_NFLOG_GROUP",
    "DEFAULT_RECHECK_INTERVAL",
    "DEFAULT_RULE_PRIORITY",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TIMEOUT",
    "Config",
    "ConfigError",
    "FirewallConfig",
    "Policy",
    "Route",
    "check_url",
    "load_config",
    "normalize_domain",
    "parse_mark",
]
