"""Sum a `HEARTHMESH_TEST_CPU_LOG` file (tests/conftest.py): the tests and the files that cost the
most CPU, worker and subprocesses together, with their wall time beside it.

    HEARTHMESH_TEST_CPU_LOG=/tmp/cpu.jsonl .venv/bin/python -m pytest -q -n 2 tests/protocol
    .venv/bin/python -m tests.cpu_report /tmp/cpu.jsonl [TOP]
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.work_counts import NAMES as WORK


def main(argv: list[str]) -> None:
    lines = [json.loads(line) for line in Path(argv[0]).read_text().splitlines() if line]
    top = int(argv[1]) if len(argv) > 1 else 30
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for line in lines:
        cpu = line["cpu_s"] + line["children_cpu_s"]
        line["total_cpu_s"] = cpu
        file = by_file[line["test"].split("::")[0]]
        file[0] += cpu
        file[1] += line["wall_s"]
    total_cpu = sum(line["total_cpu_s"] for line in lines)
    print(f"{len(lines)} tests, {total_cpu:.1f} s CPU (worker + children)")
    print("\ncpu_s  (children)  wall_s  test")
    for line in sorted(lines, key=lambda x: -x["total_cpu_s"])[:top]:
        print(
            f"{line['total_cpu_s']:6.1f} ({line['children_cpu_s']:6.1f})"
            f" {line['wall_s']:7.1f}  {line['test']}"
        )
    print("\ncpu_s  wall_s  file")
    for name, (cpu, wall) in sorted(by_file.items(), key=lambda x: -x[1][0])[:top]:
        print(f"{cpu:6.1f} {wall:7.1f}  {name}")
    _kinds(lines)
    _work(lines, top)
    _workers(lines)


PROCESSES_FROM_S = 0.2
"""Subprocess CPU from which a test counts as one that runs processes (nodes, the CLI)."""
UNMOVED_KINDS = ("browser", "netlab", "(session teardown)", "(outside tests)")
"""Kinds whose subprocesses are what they are about: Chromium, a lab's nodes, the Chromium a
worker closes at its end, and a pytest process's CPU outside its tests (tests/conftest.py)."""


def _kinds(lines: list[dict[str, Any]]) -> None:
    """CPU by what the tests run (the log's `kind`, tests/conftest.py): a test whose
    subprocesses used CPU is under `processes` unless it drives a browser or a netlab."""
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for line in lines:
        kind = line.get("kind", "?")
        if line["children_cpu_s"] >= PROCESSES_FROM_S and kind not in UNMOVED_KINDS:
            kind = "processes"
        row = by_kind[kind]
        row[0] += 1
        row[1] += line["total_cpu_s"]
        row[2] += line["children_cpu_s"]
        row[3] += line["wall_s"]
    print("\ntests   cpu_s  (children)  wall_s  kind")
    for kind, (count, cpu, children, wall) in sorted(by_kind.items(), key=lambda x: -x[1][1]):
        print(f"{count:5.0f} {cpu:7.1f} ({children:7.1f}) {wall:7.1f}  {kind}")


def _work(lines: list[dict[str, Any]], top: int) -> None:
    """The tests and files that make the code do the most: host starts first (each node start
    is one; the hostile kit's peers and the host tests start bare hosts), then meetings. These
    counts do not move with the load, where CPU and wall do."""
    counted = [line for line in lines if any(line.get(name) for name in WORK)]
    if not counted:
        return
    by_file: dict[str, Counter[str]] = defaultdict(Counter)
    for line in counted:
        by_file[line["test"].split("::")[0]].update({name: line.get(name, 0) for name in WORK})
    totals: Counter[str] = sum(by_file.values(), Counter())
    print("\nwork counts over the run: " + ", ".join(f"{totals[n]} {n}" for n in WORK))
    header = " ".join(f"{name[:6]:>6s}" for name in WORK)

    def rank(counts: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(-counts.get(name, 0) for name in ("host_starts", "meetings", "forks", "execs"))

    print(f"\n{header}  cpu_s  test (by host starts, then meetings)")
    for line in sorted(counted, key=rank)[:top]:
        row = " ".join(f"{line.get(name, 0):6d}" for name in WORK)
        print(f"{row} {line['total_cpu_s']:6.1f}  {line['test']}")
    print(f"\n{header}  file")
    for name, file in sorted(by_file.items(), key=lambda x: rank(x[1]))[:top]:
        print(" ".join(f"{file[n]:6d}" for n in WORK) + f"  {name}")


def _workers(lines: list[dict[str, Any]]) -> None:
    """Each xdist worker's tests, busy time and when it ran out of them: a worker that ends
    long before the others shows a scheduler that left it idle (lines without `start` are
    from before the log had it)."""
    timed = [line for line in lines if "start" in line]
    if not timed:
        return
    began = min(line["start"] for line in timed)
    print("\nworker  tests  busy_s  ended_s (after the first test's start)")
    for worker in sorted({line["worker"] for line in timed}):
        mine = [line for line in timed if line["worker"] == worker]
        busy = sum(line["wall_s"] for line in mine)
        ended = max(line["start"] + line["wall_s"] for line in mine) - began
        print(f"{worker:6s} {len(mine):6d} {busy:7.1f} {ended:8.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
