"""`hearthmesh bench api-control`: `bench api`'s same-node figures against a minimal server.

A control for issue #13's tail aim (same-node p99 no worse than 3x the median): the same
client harness (`tools/bench/api.py`'s `BenchClient` and `measure`: the phone sends, the
laptop on the same server receives, one at a time, then a pipelined burst; the same sample
counts and warm-up), against `tools/bench/control_server.py` in a process of its own, which
relays each frame to the other client and does nothing a node does. Two runs, each with a
fresh server process:

- `relay_*`: the frame relayed at once (the machine, the event loop, aiohttp, two processes);
- `stored_*`: relayed after one put of the frame and its durable commit on the loop's thread,
  with the node's own LMDB engine on disk (the disk's flushes added).

If the control's p99 / p50 (`*_p99_over_p50`) is as high as the node's in runs close together,
the node's ratio is this machine's and the harness's; what the node adds is the difference.
`*_commits_per_msg` is the server's commits per message the phone sent (1.0 with the store).
The bench process here holds two clients, where `bench api`'s holds three beside two node
processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hearthmesh.tools.bench.api import WARM, BenchClient, measure
from hearthmesh.tools.client import ApiClient

__all__ = ["control_server", "run"]

_TOKEN = "control"
"""The control server takes any bearer token."""


@contextlib.asynccontextmanager
async def control_server(store: Path | None) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A control server process while the block runs: its URL, and a dict that holds its
    counts (`commits`, `sends`) once the block has ended and the process with it."""
    args = [sys.executable, "-m", "hearthmesh.tools.bench.control_server"]
    if store is not None:
        args += ["--store", str(store)]
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    counts: dict[str, int] = {}
    try:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"control server exited with {await process.wait()}")
        yield f"http://127.0.0.1:{json.loads(line)['port']}", counts
    finally:
        if process.returncode is None:
            process.terminate()
        last = await process.stdout.read()
        await process.wait()
    counts.update(json.loads(last))


async def _one_run(store: Path | None, samples: int, burst: int) -> dict[str, float]:
    async with (
        control_server(store) as (url, counts),
        ApiClient(url, _TOKEN) as api,
        api.websocket() as phone_ws,
        api.websocket() as laptop_ws,
        asyncio.TaskGroup() as group,
    ):
        phone = BenchClient(phone_ws, "", ack=False)
        laptop = BenchClient(laptop_ws, "", ack=False)
        readers = [group.create_task(c.read()) for c in (phone, laptop)]
        warm_samples, warm_burst = WARM
        common: dict[str, Any] = {"quiet": [laptop], "receipts": False}
        await measure(
            phone, laptop, "", samples=warm_samples, burst=warm_burst, tag="warm", **common
        )
        figures = await measure(phone, laptop, "", samples=samples, burst=burst, tag="s", **common)
        for reader in readers:
            reader.cancel()
    figures["p99_over_p50"] = round(figures["p99_ms"] / figures["p50_ms"], 2)
    figures["commits_per_msg"] = round(counts["commits"] / counts["sends"], 3)
    return figures


async def _bench(quick: bool) -> dict[str, Any]:
    samples, burst = (50, 300) if quick else (300, 3000)
    figures: dict[str, Any] = {"samples": samples, "burst": burst, "payload_bytes": 200}
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-control-") as tmp:
        for name, store in (("relay", None), ("stored", Path(tmp) / "store")):
            run_figures = await _one_run(store, samples, burst)
            figures |= {f"{name}_same_node_{key}": value for key, value in run_figures.items()}
    figures["layout"] = (
        "a control server process (tools/bench/control_server.py); the phone and laptop "
        "clients in the bench process"
    )
    return figures


def run(quick: bool) -> dict[str, Any]:
    """Figures of the control (see the module docstring)."""
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    return asyncio.run(_bench(quick))
