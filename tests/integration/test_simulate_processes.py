"""`hearthmesh simulate` (SPEC §20.4) end to end: real `hearthmesh run` processes, one client
per device, faults, and the invariant checker over what the clients saw."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hearthmesh.tools.node_process import hearthmesh_script
from hearthmesh.tools.simulate.faults import parse_partition
from hearthmesh.tools.simulate.run import SimulateConfig, run_simulation

from .netlab import require_netlab

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _held(report: dict[str, object]) -> None:
    # the whole report as the message: pytest's own repr of a dict cuts it short
    assert report["ok"], json.dumps(report, default=str)
    assert report["missing"] == report["duplicates"] == report["out_of_order"] == 0, report
    assert report["early_receipts"] == 0 and report["converged"], report


async def test_three_processes_with_a_kill_keep_every_invariant(tmp_path: Path) -> None:
    """Node 1 runs from "another venv" (here a link to ours): the `--upgrade` path."""
    other = tmp_path / "old-venv" / "bin"
    other.mkdir(parents=True)
    (other / "hearthmesh").symlink_to(hearthmesh_script())
    config = SimulateConfig(
        nodes=3,
        duration=5.0,
        rate=3.0,  # 15 messages: what costs CPU is each message and start, not the idle seconds
        kill_every=2.5,
        down_s=1.0,
        seed=5,  # one kill, at 2.7 s (a seed with one near the end would make it a race)
        upgrade=other.parent,
        progress=False,
    )
    async with asyncio.timeout(240):  # a guard: under load a start takes 10-30 s
        report = await run_simulation(config)
    _held(report)
    assert report["config"]["old_version_nodes"] == [1], report
    assert report["kills"] == report["restarts"] == 1 and report["reconnects"] >= 1, report
    assert isinstance(report["acked"], int) and report["acked"] >= 10, report
    assert report["delivered"] == 2 * report["acked"], report


async def test_three_processes_in_namespaces_under_loss_and_a_partition(tmp_path: Path) -> None:
    require_netlab()
    config = SimulateConfig(
        nodes=3,
        duration=6.0,
        rate=2.5,  # 15 messages
        loss=10.0,
        partition=parse_partition("1+3", 3),  # 2 s of workload after the heal
        seed=2,
        out=tmp_path,
        progress=False,
        node_log_level="info",
    )
    async with asyncio.timeout(300):
        report = await run_simulation(config)
    _held(report)
    kinds = [fault["kind"] for fault in report["faults"]]
    assert kinds[:4] == ["loss_on", "partition", "heal", "loss_off"], report
    assert report["converge_after_partition_s"] is not None, report
    latest = report["after_partition_latest"]  # what to look up in the logs: the last to arrive
    assert latest and all(pair["from_node"] != pair["to_node"] for pair in latest), report
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrivals = [json.loads(line) for line in (tmp_path / "arrivals.jsonl").read_text().splitlines()]
    assert len(arrivals) == report["expected"], report
    assert all(pair["shown_s"] is not None for pair in arrivals), report
    node_log = (tmp_path / "nodes" / "node0.log").read_text()  # at INFO: why one was late
    assert " INFO hearthmesh.node.node: node up" in node_log
