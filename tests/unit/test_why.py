"""`hrneo why`: the daemon's reply from the provenance record, and its text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrneo.config import load_config
from hrneo.why import WhyRecord, format_why, why_reply

RECORD: WhyRecord = {
    "set": "hr_vpn1", "policy": "vpn1", "qname": "www.example.org",
    "names": ["www.example.org", "cdn.example.net"], "rule": "example.org",
    "first_seen": 1_700_000_000, "last_seen": 1_700_000_060, "answers": 3, "added": True,
}  # fmt: skip


class FakePipeline:
    def __init__(self, records: list[WhyRecord]) -> None:
        self.records = records
        self.asked: list[str] = []

    def why(self, address: str) -> list[WhyRecord]:
        self.asked.append(address)
        return self.records

    def flushed_for(self, address: str) -> int:
        return 2


def test_reply_normalizes_and_refuses_what_is_not_an_address(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("policies:\n  - {name: vpn1, ipset: hr_why_none, domains: [example.org]}\n")
    cfg, _ = load_config(str(cfg_path))
    p = FakePipeline([RECORD])
    reply = why_reply("2001:DB8:0::1", cfg, p, "ipset")
    assert p.asked == ["2001:db8::1"]
    assert reply["learned"] == [RECORD] and reply["flushed"] == 2
    assert reply["in_sets"] == []  # the set does not exist here
    for bad in ("", "example.org", "192.0.2.1; reboot", "1" * 5000):
        got = why_reply(bad, cfg, p, "ipset")
        assert "not an IP address" in got["error"] and len(got["error"]) < 120
    assert why_reply("192.0.2.1", cfg, None, "ipset")["learned"] == []


def test_text_of_each_case() -> None:
    text = format_why({"address": "192.0.2.1", "learned": [RECORD], "flushed": 2,
                       "in_sets": [{"set": "hr_vpn1", "policy": "vpn1", "static": False}]},
                      20_000)  # fmt: skip
    assert "192.0.2.1: in hr_vpn1 (policy vpn1, rule example.org)" in text
    assert "brought by www.example.org -> cdn.example.net" in text
    assert "new to the set then" in text and "3 answer(s)" in text
    assert "conntrack entries flushed for it: 2" in text
    static: dict[str, Any] = {
        "address": "203.0.113.1", "learned": [],
        "in_sets": [{"set": "hr_vpn1", "policy": "vpn1", "static": True}],
    }  # fmt: skip
    assert "a static entry of policy vpn1" in format_why(static, 20_000)
    other = dict(static, in_sets=[{"set": "hr_vpn1", "policy": "vpn1", "static": False}])
    assert "before this daemon started, or by someone else" in format_why(other, 20_000)
    none = format_why({"address": "198.51.100.7", "learned": [], "in_sets": []}, 20_000)
    assert "in no set of hrneo's policies" in none and "20,000" in none
