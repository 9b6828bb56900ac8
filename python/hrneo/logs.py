"""Where the daemon logs: stderr (the service manager adds what it wants) or
syslog through /dev/log, which Entware and OpenWrt provide."""

from __future__ import annotations

import logging
import os
import stat
import sys

SYSLOG_SOCKET = "/dev/log"
_STDERR_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# The tag syslog daemons parse (`hrneo[PID]: `); they add the time themselves.
_SYSLOG_FORMAT = "hrneo[%(process)d]: %(levelname)s %(message)s"
_installed: list[logging.Handler] = []


def setup_logging(level: str, target: str = "stderr", socket_path: str = SYSLOG_SOCKET) -> str:
    """Send the root logger to `target` ("stderr" or "syslog") at `level`, replacing
    what an earlier call set up. Returns the target in use: without a syslog
    socket it is stderr, and a warning says so."""
    root = logging.getLogger()
    for h in _installed:  # only ours: a test's capture handler stays
        root.removeHandler(h)
        h.close()
    _installed.clear()
    root.setLevel(level)
    problem = None
    if target == "syslog":
        try:
            is_socket = stat.S_ISSOCK(os.stat(socket_path).st_mode)
        except OSError as e:
            problem = f"{socket_path}: {e.strerror or e}"
        else:
            if is_socket:
                _install(root, _syslog_handler(socket_path))
                return "syslog"
            problem = f"{socket_path} is not a socket"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_STDERR_FORMAT))
    _install(root, handler)
    if problem:
        logging.getLogger("hrneo").warning("log: syslog: %s; logging to stderr", problem)
    return "stderr"


def _install(root: logging.Logger, handler: logging.Handler) -> None:
    root.addHandler(handler)
    _installed.append(handler)


def _syslog_handler(path: str) -> logging.Handler:
    from logging.handlers import SysLogHandler  # only a daemon with `log: syslog` needs it

    class QuietSysLog(SysLogHandler):
        # Like C's syslog(): a message sent while syslogd restarts is lost, without a
        # traceback on stderr for each one (the handler reconnects by itself).
        def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
            pass

    handler = QuietSysLog(address=path, facility=SysLogHandler.LOG_DAEMON)
    handler.setFormatter(logging.Formatter(_SYSLOG_FORMAT))
    return handler
