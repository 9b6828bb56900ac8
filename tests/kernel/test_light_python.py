"""The daemon on the smallest Python a router ships (python3-light +
python3-logging + PyYAML without libyaml; see tests/lightpython.py): start,
rules, status, reload, stop, with nothing missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightpython
import pytest
from conftest import require_kernel_tools
from hrneo.testing.netns import Netns

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
nflog_group: 89
control_socket: {tmp}/hrneo.sock
state_file: {tmp}/state.json
metrics_listen: 127.0.0.1:9110
firewall:
  dns_chains: [OUTPUT]
  recheck_interval: 1
policies:
  - name: vpn
    ipset: hrl_vpn
    ipset6: hrl_vpn6
    domains: [example.org]
    static: [203.0.113.0/24]
"""


def test_daemon_on_light_python(netns: Netns, tmp_path: Path) -> None:
    require_kernel_tools("iptables", "ip6tables", "ipset")
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG.format(tmp=tmp_path))
    pidfile = tmp_path / "hrneo.pid"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = netns.popen(
            lightpython.argv("run", "--config", str(conf), "--pidfile", str(pidfile)),
            stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO / "python")),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        assert "hrl_vpn" in netns.sh("ipset list -n").stdout
        assert "NFLOG" in netns.sh("iptables -w -S OUTPUT").stdout
        st = netns.sh([sys.executable, "-m", "hrneo", "status", "--json",
                       "--socket", str(tmp_path / "hrneo.sock")])  # fmt: skip
        assert '"name": "vpn"' in st.stdout
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded:" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "not in python3-light" not in text, text
    assert "metrics on http://127.0.0.1:9110/metrics" in text
    assert "NFLOG" not in netns.sh("iptables -w -S OUTPUT").stdout
