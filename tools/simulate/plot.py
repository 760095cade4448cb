"""The PNG of a `hearthmesh simulate` run: latency over time, with the faults marked
(SPEC §20.4).

State: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hearthmesh.tools.simulate.faults import FaultLog

__all__ = ["plot_latency", "plot_scale"]


def plot_latency(
    path: Path, latencies: Sequence[tuple[float, float]], log: FaultLog, *, setting: str = ""
) -> Path:
    """Each (sent at, latency) to a recipient device as a dot; kills as red lines, restarts
    as green ones, the partition shaded, the drain (every fault healed) as a black line."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=100)
    if latencies:
        axes.scatter([t for t, _ in latencies], [lat for _, lat in latencies], s=2, alpha=0.5)
    for at in log.times("kill"):
        axes.axvline(at, color="red", linewidth=0.8, label="kill -9")
    for at in log.times("restarted"):
        axes.axvline(at, color="green", linewidth=0.6, linestyle=":", label="restarted")
    for start, end in zip(log.times("partition"), log.times("heal"), strict=False):
        axes.axvspan(start, end, color="orange", alpha=0.2, label="partition")
    for at in log.times("drain"):
        axes.axvline(at, color="black", linewidth=1.0, label="drain (all healed)")
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        axes.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    axes.set_xlabel("sent at (s since the workload started)")
    axes.set_ylabel("latency to a recipient device (s)")
    axes.set_title(f"hearthmesh simulate: message latency {setting}".strip(), fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_scale(path: Path, sizes: Sequence[dict[str, Any]]) -> Path:
    """Per-node cost against the mesh's size (`simulate --scale`): CPU % of a core and KiB/s
    sent and received, idle and under the workload, each the mean over the nodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [s["nodes"] for s in sizes]
    figure, (cpu, traffic) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    for phase, style in (("idle", "--"), ("workload", "-")):
        cpu.plot(
            nodes,
            [s[phase]["cpu_pct_of_a_core"]["mean"] for s in sizes],
            style,
            marker="o",
            label=phase,
        )
        for way in ("sent", "received"):
            traffic.plot(
                nodes,
                [s[phase][f"{way}_kib_per_s"]["mean"] for s in sizes],
                style,
                marker="o",
                label=f"{phase} {way}",
            )
    cpu.set_ylabel("CPU per node (% of a core, process time)")
    traffic.set_ylabel("TCP KiB/s per node")
    for axes in (cpu, traffic):
        axes.set_xlabel("nodes")
        axes.set_ylim(bottom=0)
        axes.legend(fontsize=8)
    figure.suptitle("hearthmesh simulate --scale: cost per node as the mesh grows", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
