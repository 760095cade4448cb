"""`hearthmesh bench`: run one benchmark and print one JSON object with the machine's facts."""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "machine_facts", "run_bench"]

BenchFn = Callable[[bool], dict[str, Any]]

BENCHMARKS: dict[str, str] = {
    "api": "hearthmesh.tools.bench.api",
    "api-control": "hearthmesh.tools.bench.api_control",
    "api-nosync": "hearthmesh.tools.bench.api:run_nosync",
    "codec": "hearthmesh.tools.bench.codec",
    "connectivity": "hearthmesh.tools.bench.connectivity",
    "delivery": "hearthmesh.tools.bench.delivery",
    "delivery-cost": "hearthmesh.tools.bench.delivery_cost",
    "delivery-cost-disk": "hearthmesh.tools.bench.delivery_cost:run_disk",
    "e2ee": "hearthmesh.tools.bench.e2ee",
    "fanout": "hearthmesh.tools.bench.fanout",
    "group": "hearthmesh.tools.bench.group",
    "hostile": "hearthmesh.tools.bench.hostile",
    "hostile-tunnel": "hearthmesh.tools.bench.hostile:run_tunnel",
    "node-cost": "hearthmesh.tools.bench.node_cost",
    "p2p": "hearthmesh.tools.bench.p2p",
    "send-counts": "hearthmesh.tools.bench.send_counts",
    "storage": "hearthmesh.tools.bench.storage",
    "sync": "hearthmesh.tools.bench.sync",
    "web": "hearthmesh.tools.bench.web",
}
"""Name → module whose `run(quick: bool) -> dict` returns the figures (`module:function` names
another function than `run`)."""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_facts() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, Python, platform, commit."""
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }


def run_bench(name: str | None, *, list_only: bool, quick: bool) -> int:
    """Print the list of benchmarks, or run `name` and print its JSON; returns an exit code."""
    if list_only or name is None:
        for bench in sorted(BENCHMARKS):
            print(bench)
        return 0 if list_only else 2
    if name not in BENCHMARKS:
        known = ", ".join(sorted(BENCHMARKS))
        print(f"unknown benchmark {name!r}; known: {known}", file=sys.stderr)
        return 2
    module_name, _, function = BENCHMARKS[name].partition(":")
    run: BenchFn = getattr(importlib.import_module(module_name), function or "run")
    load_before = os.getloadavg()[0]
    figures = run(quick)
    machine = machine_facts()
    # A shared machine's latency figures mean little without its load (four runs at once are
    # common): the 1-minute load average as the run started and as it ended.
    machine["load_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(json.dumps({"benchmark": name, "quick": quick, **figures, "machine": machine}))
    return 0
