"""`hearthmesh conformance vectors --impl CMD` (SPEC §20.1): every vector of every file of §20
through another implementation, as JSON lines on its stdin and stdout.

Each case goes out as one line, `{"file", "id", "op", <inputs>}` (what the case holds but its
expectations), and the implementation answers one line: `{"fields": ...}` for what it decoded
or `{"error": name, "code": n}` for a refusal. A valid case passes when the fields are equal;
an invalid one when the code is the case's §9 code (the class name is the implementation's
own). State owned here: the one run's child process and its report.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Final

from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.tools.vectors.codecs import OPS
from hearthmesh.tools.vectors.common import VECTORS_DIR
from hearthmesh.tools.vectors.data_cases import DATA_TOPICS, wire_case

__all__ = ["OUR_IMPL", "VectorReport", "drive"]

OUR_IMPL: Final = f"{shlex.quote(sys.executable)} -m hearthmesh.tools.conformance.vector_peer"
"""The command of this implementation's answerer."""
_EXPECTATIONS: Final = frozenset({"id", "fields", "error", "code", "note"})


@dataclass(slots=True, kw_only=True)
class VectorReport:
    impl: str
    cases: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and not self.failed

    def as_json(self) -> dict[str, Any]:
        return {
            "impl": self.impl,
            "passed": self.passed,
            "cases": self.cases,
            "failed": self.failed,
        }


def _wire_cases() -> list[tuple[str, dict[str, Any]]]:
    """Every case of every vector file: the wire files' as they are, the data files' (§3-7,
    §21, §27) in the same form (`data_cases.wire_case`)."""
    found = []
    for path in sorted(VECTORS_DIR.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for case in document["valid"] + document["invalid"]:
            if path.stem in DATA_TOPICS:
                case = wire_case(path.stem, case)
            if case.get("op") not in OPS:
                raise LocalProtocolError(f"{path.name} case {case['id']}: no op this driver knows")
            found.append((path.stem, case))
    return found


def _verdict(case: dict[str, Any], got: dict[str, Any]) -> bool:
    if "fields" in case:
        return bool(got.get("fields") == case["fields"])
    return "fields" not in got and got.get("code") == case["code"]


def drive(impl: str = OUR_IMPL) -> VectorReport:
    """Run every wire case through `impl` (a shell-style command line)."""
    report = VectorReport(impl=impl)
    with subprocess.Popen(
        shlex.split(impl),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        for topic, case in _wire_cases():
            report.cases += 1
            request = {k: v for k, v in case.items() if k not in _EXPECTATIONS}
            child.stdin.write(json.dumps({"file": topic, "id": case["id"], **request}) + "\n")
            child.stdin.flush()
            line = child.stdout.readline()
            try:
                got = json.loads(line)
            except json.JSONDecodeError:
                got = {"unreadable": line[:200]}
            if not isinstance(got, dict) or not _verdict(case, got):
                expected = {k: case[k] for k in ("fields", "error", "code") if k in case}
                report.failed.append(
                    {"file": topic, "id": case["id"], "expected": expected, "got": got}
                )
        child.stdin.close()
        child.wait(timeout=10)
    return report
