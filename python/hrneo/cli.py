"""`hrneo run | check | status | import | match | replay | install-service`: the
command line (also `python -m hrneo`).

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hrneo.errors import HrneoError

if TYPE_CHECKING:
    from typing import Callable, TextIO

    from hrneo.config import Config

# hrneo.config's defaults, spelled out: the config (and PyYAML) is imported only by
# the commands that read one, so `hrneo status` starts fast on a small router.
DEFAULT_CONFIG_PATH = "/opt/etc/hrneo/hrneo.yaml"
DEFAULT_SOCKET_PATH = "/run/hrneo.sock"
# hrneo.importer.FORMATS / INLINE_MAX, spelled out: the importer is imported only by `import`.
IMPORT_FORMATS = ("hydraroute", "adguard", "dnsmasq", "list", "keen-pbr")
INLINE_MAX = 1000
SERVICE_TARGETS = ("entware", "openwrt", "systemd")  # hrneo.install.TARGETS

log = logging.getLogger("hrneo")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _default_config() -> str:
    return os.environ.get("HRNEO_CONFIG") or DEFAULT_CONFIG_PATH


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hrneo", description="DNS-driven selective routing daemon (NFLOG + ipset)."
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cfg_help = f"config file (default: $HRNEO_CONFIG or {DEFAULT_CONFIG_PATH})"
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", "-c", default=None, help=cfg_help)
    run.add_argument(
        "--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default INFO)",
    )  # fmt: skip
    run.add_argument(
        "--log", choices=["stderr", "syslog"], default=None, dest="log_to",
        help="where to log (default: the config's `log`, else stderr)",
    )  # fmt: skip
    run.add_argument(
        "--pidfile", metavar="PATH", default=None,
        help="write the daemon's pid here once it is up; removed at stop (for init scripts)",
    )  # fmt: skip
    run.add_argument(
        "--hydraroute", metavar="DIR", default=None,
        help="take the policies from a HydraRoute Neo directory (converted as `import "
        "hydraroute` does, again on SIGHUP); with --config, that file gives the other "
        "settings and has `policies: []`",
    )  # fmt: skip
    chk = sub.add_parser("check", help="validate the config and its list files")
    chk.add_argument("--config", "-c", default=None, help=cfg_help)
    from hrneo.status import ACCOUNTING

    st = sub.add_parser(
        "status", help="counters of the running daemon",
        description=f"Counters of the running daemon.\n\n{ACCOUNTING}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    fmt = st.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the raw JSON")
    fmt.add_argument(
        "--prometheus", action="store_true", help="print Prometheus text exposition format"
    )
    st.add_argument(
        "--socket", default=None,
        help=f"control socket (default: $HRNEO_SOCKET or {DEFAULT_SOCKET_PATH})",
    )  # fmt: skip
    why = sub.add_parser("why", help="why an address is in a set: policy, names, when")
    why.add_argument("address", help="an IPv4 or IPv6 address")
    why.add_argument("--json", action="store_true", help="print the raw JSON")
    why.add_argument(
        "--socket", default=None,
        help=f"control socket (default: $HRNEO_SOCKET or {DEFAULT_SOCKET_PATH})",
    )  # fmt: skip
    imp = sub.add_parser(
        "import", help="print an equivalent hrneo config from another tool's files",
        description="Formats: hydraroute (a HydraRoute Neo directory, default "
        "/opt/etc/HydraRoute), adguard (ipset file or AdGuardHome.yaml), dnsmasq "
        "(ipset=/nftset= lines), list (plain or v2fly domain lists, one policy per file), "
        "keen-pbr (v2 keen-pbr.conf or v3 config.json). A HydraRoute target is an "
        "interface (and gets a route) if named with --interface or if "
        "/sys/class/net/TARGET exists here.",
    )  # fmt: skip
    imp.add_argument("format", choices=IMPORT_FORMATS)
    imp.add_argument("paths", nargs="*", metavar="PATH")
    imp.add_argument(
        "--interface", action="append", default=[], metavar="NAME",
        help="hydraroute: this target is a network interface (repeatable)",
    )  # fmt: skip
    imp.add_argument(
        "--longest-match", action="store_true",
        help="hydraroute: keep domains PolicyOrder sends elsewhere (hrneo's longest match "
        "then decides, unlike HydraRoute)",
    )  # fmt: skip
    imp.add_argument("--policy", help="list: one policy of this name for all files")
    imp.add_argument("--ipset", help="list: its IPv4 set (default: the policy name)")
    imp.add_argument("--ipset6", help="list: its IPv6 set (default: IPSET + 'v6')")
    imp.add_argument(
        "--timeout", type=int, default=None,
        help="adguard/dnsmasq/list/keen-pbr: seconds an address stays (default 3600; "
        "keen-pbr: its ttl_ms, v2 forever)",
    )  # fmt: skip
    imp.add_argument(
        "--cache", action="append", default=[], metavar="DIR",
        help="keen-pbr: a directory with copies of its URL lists (NAME.lst or NAME.txt), "
        "imported instead of a warning (repeatable)",
    )  # fmt: skip
    imp.add_argument(
        "--out", metavar="DIR", default=None,
        help="write DIR/hrneo.yaml, and DIR/lists/NAME.list for policies of more than "
        f"--inline-max domains (default {INLINE_MAX}), instead of printing",
    )  # fmt: skip
    imp.add_argument("--inline-max", type=int, default=INLINE_MAX, help=argparse.SUPPRESS)
    mt = sub.add_parser(
        "match", help="which policy a name goes to, and through which rule (no daemon needed)"
    )
    mt.add_argument("names", nargs="+", metavar="NAME")
    mt.add_argument("--config", "-c", default=None, help=cfg_help)
    rp = sub.add_parser(
        "replay", help="dry run over a capture: which addresses would go to which set",
        description="Reads a pcap or pcapng file (Ethernet, VLAN, Linux cooked SLL/SLL2, raw "
        "IP, NFLOG) and prints which addresses its DNS answers would put into which set. "
        "No root, no kernel access. FILE - reads standard input.",
    )  # fmt: skip
    rp.add_argument("file", metavar="FILE")
    rp.add_argument("--config", "-c", default=None, help=cfg_help)
    rp.add_argument("--json", action="store_true", help="print JSON")
    ins = sub.add_parser(
        "install-service", help="write the service files (init script, firmware hooks, unit)",
        description="entware: /opt/etc/init.d/S99hrneo and Keenetic NDM hooks; openwrt: a "
        "procd init script and a hotplug hook; systemd: a unit. A file that exists and was "
        "not written by this command (or was edited since) is never replaced.",
    )  # fmt: skip
    ins.add_argument("target", choices=SERVICE_TARGETS)
    ins.add_argument(
        "--config", "-c", default=None,
        help="the config the service runs (default: /opt/etc/hrneo/hrneo.yaml on entware, "
        "/etc/hrneo/hrneo.yaml otherwise)",
    )  # fmt: skip
    ins.add_argument("--root", metavar="DIR", default=None, help="write under DIR instead of /")
    ins.add_argument("--dry-run", action="store_true", help="print the files, write nothing")
    return p


def cmd_import(args: argparse.Namespace) -> int:
    """Print the imported config on stdout (or write it with --out), warnings on stderr."""
    from hrneo.importer import ImportFailure, render, run_import, write_out

    try:
        result = run_import(
            args.format, args.paths, interfaces=args.interface, policy=args.policy,
            ipset=args.ipset, ipset6=args.ipset6, timeout=args.timeout,
            cache_dirs=args.cache, longest_match=args.longest_match,
        )  # fmt: skip
    except ImportFailure as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    for w in result.warnings:
        print(f"{w} (warning)", file=sys.stderr)
    source = f"{args.format} {' '.join(args.paths)}".rstrip()
    if args.out is None:
        big = [p.name for p in result.policies if len(p.domains) > args.inline_max]
        if big:
            print(
                f"import: {', '.join(big)}: more than {args.inline_max} domains written inline; "
                "--out DIR writes them as list files, which load several times faster (note)",
                file=sys.stderr,
            )
        sys.stdout.write(render(result, source))
        return EXIT_OK
    try:
        written = write_out(result, source, args.out, args.inline_max)
    except OSError as e:
        print(f"{args.out}:0: cannot write: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    return EXIT_OK


def cmd_check(path: str, out: TextIO | None = None) -> int:
    """Validate; print `file:line: message` lines. 0 if valid, 2 if not."""
    from hrneo.config import ConfigError, load_config

    out = out or sys.stderr  # looked up at call time (tests swap sys.stderr)
    try:
        cfg, warnings = load_config(path)
    except ConfigError as e:
        for w in e.warnings:
            print(f"{w} (warning)", file=out)
        for line in e.errors:
            print(line, file=out)
        return EXIT_USAGE
    for w in warnings:
        print(f"{w} (warning)", file=out)
    print(
        f"{path}: ok: {len(cfg.policies)} policies, {len(cfg.watchlist)} domains, "
        f"backend {cfg.backend}",
        file=sys.stdout,
    )
    for p in cfg.policies:
        if p.clients and p.route:  # without a route, `clients` was a warning
            print(f"policy {p.name}: routed for clients {', '.join(p.clients)} only")
    return EXIT_OK


def cmd_run(
    path: str | None,
    level: str,
    hydraroute: str | None = None,
    log_to: str | None = None,
    pidfile: str | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT.

    `hydraroute`: the policies come from that HydraRoute Neo directory, and
    `path` (optional then) gives the other settings. `log_to` overrides the
    config's `log`; `pidfile` is written once the daemon is up.
    """
    import functools

    from hrneo.config import ConfigError, load_config
    from hrneo.logs import setup_logging

    setup_logging(level, log_to or "stderr")
    loader: Callable[[str], tuple[Config, list[str]]] = load_config
    if hydraroute is not None:
        from hrneo.importer import load_hydraroute_config

        # The daemon reloads with loader(config.path): the directory.
        loader = functools.partial(load_hydraroute_config, base=path)
        path = hydraroute
    elif path is None:
        path = _default_config()
    try:
        cfg, warnings = loader(path)
    except ConfigError as e:
        for line in e.errors:
            log.error("%s", line)
        return EXIT_USAGE
    if log_to is None and cfg.log != "stderr":
        setup_logging(level, cfg.log)
    for w in warnings:
        log.warning("%s", w)
    from hrneo.daemon import Daemon

    try:
        return Daemon(cfg, loader=loader, pidfile=pidfile).run()
    except (HrneoError, OSError) as e:
        log.error("hrneo cannot run: %s", e)
        return EXIT_FAIL


def cmd_status(sock: str, as_json: bool, prometheus: bool = False) -> int:
    """Ask the running daemon for its counters."""
    from hrneo.control import request
    from hrneo.status import format_prometheus, format_status

    try:
        st = request(sock, "status")
    except HrneoError as e:
        print(f"hrneo status: {e}", file=sys.stderr)
        return EXIT_FAIL
    if not isinstance(st, dict):
        print("hrneo status: the daemon's reply is not a status", file=sys.stderr)
        return EXIT_FAIL
    if as_json:
        import json

        print(json.dumps(st, indent=2, sort_keys=True))
    elif prometheus:
        sys.stdout.write(format_prometheus(st))
    else:
        print(format_status(st))
    return EXIT_OK


def cmd_why(sock: str, address: str, as_json: bool) -> int:
    """Ask the running daemon why `address` is (or is not) in a set."""
    from hrneo.control import request
    from hrneo.why import format_why

    try:
        reply = request(sock, f"why {address}")
    except HrneoError as e:
        print(f"hrneo why: {e}", file=sys.stderr)
        return EXIT_FAIL
    if not isinstance(reply, dict) or "error" in reply:
        why_not = reply.get("error") if isinstance(reply, dict) else "not a why reply"
        print(f"hrneo why: {why_not}", file=sys.stderr)
        return EXIT_FAIL
    if as_json:
        import json

        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        from hrneo._core import WHY_RECORDS

        print(format_why(reply, WHY_RECORDS))
    return EXIT_OK


def _load_or_report(path: str) -> Config | None:
    """The config at `path`, or None after printing its errors (warnings are not
    printed: `hrneo check` is the place for them)."""
    from hrneo.config import ConfigError, load_config

    try:
        return load_config(path)[0]
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return None


def cmd_match(names: Sequence[str], path: str) -> int:
    """Print which policy each name goes to, from the config alone."""
    from hrneo.match import match_name

    cfg = _load_or_report(path)
    if cfg is None:
        return EXIT_USAGE
    status = EXIT_OK
    for name in names:
        try:
            print(match_name(cfg, name).text())
        except ValueError as e:
            print(f"hrneo match: {e}", file=sys.stderr)
            status = EXIT_USAGE
    return status


def cmd_replay(file: str, path: str, as_json: bool) -> int:
    """Dry run of a capture against the config; no root, no kernel."""
    from hrneo.pcapfile import PcapError
    from hrneo.replay import format_replay, replay

    cfg = _load_or_report(path)
    if cfg is None:
        return EXIT_USAGE
    try:
        if file == "-":
            res = replay(cfg, sys.stdin.buffer)
        else:
            with open(file, "rb") as f:
                res = replay(cfg, f)
    except OSError as e:
        print(f"{file}: cannot read: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL
    except PcapError as e:
        print(f"{file}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        import json

        print(json.dumps(res.to_json(), indent=2, sort_keys=True))
    else:
        print(format_replay(res, file))
    if res.damage:
        print(f"{file}: damaged, replayed up to there: {res.damage} (warning)", file=sys.stderr)
    return EXIT_OK


def cmd_install_service(args: argparse.Namespace) -> int:
    """Write (or with --dry-run, print) the service files of one target."""
    from hrneo.install import InstallError, install

    lines: list[str] = []
    try:
        install(args.target, args.config, args.root, args.dry_run, lines)
    except InstallError as e:
        print(f"hrneo install-service: {e}; nothing written", file=sys.stderr)
        return EXIT_FAIL
    except OSError as e:
        print("\n".join(lines))
        print(f"hrneo install-service: {e}", file=sys.stderr)
        return EXIT_FAIL
    print("\n".join(lines))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hrneo` and `python -m hrneo`."""
    parser = _parser()
    # Known-args parsing so `import FORMAT --interface X PATH` works: argparse gives
    # an optional nargs="*" positional nothing once an option comes between.
    args, extra = parser.parse_known_args(argv)  # exits 2 on bad usage
    if extra:
        if args.command != "import" or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.paths += extra
    if args.command == "check":
        return cmd_check(args.config or _default_config())
    if args.command == "import":
        return cmd_import(args)
    if args.command == "run":
        return cmd_run(args.config, args.log_level, args.hydraroute, args.log_to, args.pidfile)
    if args.command == "match":
        return cmd_match(args.names, args.config or _default_config())
    if args.command == "replay":
        return cmd_replay(args.file, args.config or _default_config(), args.json)
    if args.command == "install-service":
        return cmd_install_service(args)
    sock = args.socket or os.environ.get("HRNEO_SOCKET") or DEFAULT_SOCKET_PATH
    if args.command == "why":
        return cmd_why(sock, args.address, args.json)
    return cmd_status(sock, args.json, args.prometheus)
