"""`hearthmesh conformance vectors` (SPEC §20.1): our decoders answer every wire vector over
JSON lines, and an implementation that gets some wrong is told which."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from hearthmesh.tools.cli import main
from hearthmesh.tools.conformance.vector_driver import drive
from hearthmesh.tools.vectors.common import VECTORS_DIR

BROKEN = """
import json, sys
from hearthmesh.tools.conformance.vector_peer import answer

for line in sys.stdin:
    case = json.loads(line)
    got = answer(case)
    if case["op"] == "hello":  # decodes nothing right
        got = {"fields": {}}
    if case["op"] == "receipt_body" and "error" in got:  # takes every receipt
        got = {"fields": {"type": "Receipt"}}
    if case["op"] == "hlc_receive" and "error" in got:  # adopts a remote clock however far ahead
        got = {"fields": {"timestamp": case["remote"]}}
    if case["op"] == "signal" and got.get("code") == 71:  # takes presence from anyone
        got = {"fields": {}}
    if case["op"] == "verify_commitment" and got.get("code") == 41:  # checks no commitment
        got = {"fields": {}}
    print(json.dumps(got), flush=True)
"""


def test_our_implementation_answers_every_wire_vector() -> None:
    """Every case of every file, the data files' (§3-7, §21, §27) among them."""
    report = drive()
    assert report.passed, report.failed
    files = [json.loads(p.read_text()) for p in VECTORS_DIR.glob("*.json")]
    assert report.cases == sum(len(f["valid"]) + len(f["invalid"]) for f in files)


def test_an_implementation_that_breaks_rules_fails_exactly_those_cases(tmp_path: Path) -> None:
    script = tmp_path / "broken_impl.py"
    script.write_text(BROKEN)
    report = drive(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    assert not report.passed
    hello = json.loads((VECTORS_DIR / "hello.json").read_text())
    receipts = json.loads((VECTORS_DIR / "receipts.json").read_text())
    expected = {("hello", c["id"]) for c in hello["valid"] + hello["invalid"]}
    expected |= {("receipts", c["id"]) for c in receipts["invalid"]}
    hlc = json.loads((VECTORS_DIR / "hlc.json").read_text())
    expected |= {("hlc", c["id"]) for c in hlc["invalid"] if c["op"] == "receive"}
    signals = json.loads((VECTORS_DIR / "signals.json").read_text())
    expected |= {("signals", c["id"]) for c in signals["invalid"] if c["code"] == 71}
    verify = json.loads((VECTORS_DIR / "verify.json").read_text())
    expected |= {("verify", c["id"]) for c in verify["invalid"] if c["code"] == 41}
    assert {(f["file"], f["id"]) for f in report.failed} == expected


def test_the_command_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "vectors"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
