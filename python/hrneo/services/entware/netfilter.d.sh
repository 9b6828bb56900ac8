#!/bin/sh
@HEADER@
# Keenetic NDM runs the scripts of /opt/etc/ndm/netfilter.d/ after it rewrote a
# netfilter table ($type: iptables or ip6tables, $table: filter, mangle, nat, ...),
# which can wipe hrneo's rules: ask the daemon to put them back now (SIGUSR1).
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
