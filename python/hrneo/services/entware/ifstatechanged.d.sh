#!/bin/sh
@HEADER@
# Keenetic NDM runs the scripts of /opt/etc/ndm/ifstatechanged.d/ when an interface
# changes state ($id, $system_name, $layer, $level): a tunnel came up or went down.
# Ask hrneo to re-check its routes and rules now (SIGUSR1) instead of at its next check.
# Returns at once, and does nothing when hrneo is not running.
PIDFILE=${HRNEO_PIDFILE:-/opt/var/run/hrneo.pid}
[ -r "$PIDFILE" ] || exit 0
read -r pid < "$PIDFILE" || [ -n "$pid" ] || exit 0
case "$pid" in '' | *[!0-9]*) exit 0 ;; esac
[ -r "/proc/$pid/cmdline" ] || exit 0
case "$(tr '\000' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
    *"hrneo run "*) kill -USR1 "$pid" 2>/dev/null ;;
esac
exit 0
