"""The PNG of a `hearthmesh simulate` run: latency over time, with the faults marked
(SPEC §20.4).

State: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hearthmesh.tools.simulate.faults import FaultLog

__all__ = ["plot_latency"]


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
