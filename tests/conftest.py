"""Shared fixtures. Kernel tests need root and a real kernel: in CI (CI=true)
a missing requirement FAILS the test; on a developer machine it skips, loudly."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hrneo.testing.netns import Netns, leftover_namespaces

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Fail in CI, skip elsewhere, when a kernel test cannot run here."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"kernel test cannot run: {why}", pytrace=False)
    pytest.skip(why)


def require_kernel_tools(*tools: str) -> None:
    require(os.geteuid() == 0, "needs root")
    for tool in ("ip", *tools):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")


@pytest.fixture(autouse=True)
def _state_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config without `state_file` keeps its state in the test's directory, never
    in the machine's /var/lib/hrneo (a daemon of one test would restore another's)."""
    import hrneo.config.loader

    monkeypatch.setattr(hrneo.config.loader, "DEFAULT_STATE_FILE", str(tmp_path / "state.json"))


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh network namespace (lo up), deleted afterwards."""
    require_kernel_tools()
    ns = Netns()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def make_netns() -> Iterator[object]:
    """Factory for several namespaces in one test; all are deleted afterwards."""
    require_kernel_tools()
    made: list[Netns] = []

    def make(tag: str = "") -> Netns:
        ns = Netns(tag)
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in made:
            ns.delete()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = leftover_namespaces()
    if left:
        print(f"\nWARNING: namespaces left behind: {left}", file=sys.stderr)
