"""README.md and README.ru.md stay in step: the same configuration keys, the same
commands, and the quick starts' configs pass `hrneo check`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hrneo import cli

ROOT = Path(__file__).parents[2]


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def keys(node: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            out |= {f"{prefix}{k}"} | keys(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for item in node:
            out |= keys(item, prefix)
    return out


def config_block(text: str, title: str) -> Any:
    block = re.search(r"```yaml\n(.*?)```", section(text, title), re.DOTALL)
    assert block
    return yaml.safe_load(block.group(1))


def test_configuration_reference_in_step() -> None:
    en = config_block((ROOT / "README.md").read_text(), "Configuration")
    ru = config_block((ROOT / "README.ru.md").read_text(), "Настройки")
    assert keys(en) == keys(ru)
    assert en == ru  # the same example values too


def test_commands_in_step() -> None:
    def commands(text: str) -> set[str]:
        return set(re.findall(r"^\| `hrneo ([a-z-]+)", text, re.MULTILINE))

    en = commands(section((ROOT / "README.md").read_text(), "Commands"))
    ru = commands(section((ROOT / "README.ru.md").read_text(), "Команды"))
    assert en == ru and {"match", "replay", "install-service"} <= en


@pytest.mark.parametrize(
    ("readme", "title"),
    [
        ("README.md", "Keenetic in ten minutes"),
        ("README.md", "OpenWrt in ten minutes"),
        ("README.ru.md", "Keenetic за десять минут"),
        ("README.ru.md", "OpenWrt за десять минут"),
    ],
)
def test_quick_start_configs_pass_check(
    readme: str, title: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = section((ROOT / readme).read_text(), title)
    m = re.search(r"<<'EOF'\n(.*?)\nEOF\n", text, re.DOTALL)
    assert m
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(m.group(1) + "\n")
    assert cli.main(["check", "--config", str(conf)]) == 0, capsys.readouterr().err
    assert cli.main(["match", "--config", str(conf), "www.youtube.com"]) == 0
    assert "policy vpn (sets hr_vpn, hr_vpn6) via youtube.com at" in capsys.readouterr().out
