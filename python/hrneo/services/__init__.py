"""Service files shipped with hrneo (package data), put in place by
``hrneo install-service`` (:mod:`hrneo.install`): an Entware init script and
Keenetic NDM hooks, an OpenWrt procd script and hotplug hook, a systemd unit.

Placeholders ``@PYTHON@``, ``@CONFIG@``, ``@SOCKET@`` and ``@HEADER@`` are
filled in at install time; every value is checked to be a plain absolute path
first, so it needs no quoting anywhere it lands.
"""
