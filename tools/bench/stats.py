"""Small shared helpers of the benchmarks: percentiles and process sizes."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["percentile", "process_cpu_s", "process_rss_mb"]


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank `pct`-th percentile (0 < pct <= 100) of `values`."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats
    return ordered[min(len(ordered), int(rank)) - 1]


def process_rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default) in MiB, from /proc."""
    path = f"/proc/{pid or os.getpid()}/status"
    with open(path, encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds, from /proc: a cost that
    a loaded machine stretches far less than it stretches latency."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
