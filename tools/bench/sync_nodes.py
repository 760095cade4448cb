"""The node-level part of `hearthmesh bench sync`: a newly linked device catches up.

A primary node holds `events` events in one room; a device is linked to it, starts, connects,
and reconciles (SPEC §23); the time runs from its connect until its history digest equals the
primary's. Both nodes run in this process (one Python, 2 cores shared with the other node).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.identity.linking import link_new_device
from hearthmesh.node.node import Node
from hearthmesh.protocol.linking import encode_link_code
from hearthmesh.tools.node_process import free_port

__all__ = ["node_new_device"]

_BODY = b"x" * 200
_SEND_CHUNK = 2_000


def _config(path: Path) -> NodeConfig:
    return NodeConfig(data_dir=path, listen_addrs=(f"/ip4/127.0.0.1/tcp/{free_port()}",))


async def _measure(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        async with Node(_config(Path(tmp) / "primary")) as primary:
            room = await primary.create_group("history", [])
            started = time.perf_counter()
            for start in range(0, events, _SEND_CHUNK):
                count = min(_SEND_CHUNK, events - start)
                await asyncio.gather(*(primary.send(room, _BODY) for _ in range(count)))
            build_s = time.perf_counter() - started
            target, total = await primary.history_digest(room)
            config = _config(Path(tmp) / "device")
            await link_new_device(
                config.data_dir,
                encode_link_code(primary.create_link_code()),
                now_ms=lambda: time.time_ns() // 1_000_000,
                rng=secrets.token_bytes,
                listen_addrs=config.listen_addrs,
            )
            async with Node(config) as device:
                started = time.perf_counter()
                await device.connect(primary.listen_addrs[0])
                while (await device.history_digest(room))[0] != target:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # polling a store: there is no event to await
                caught_up_s = time.perf_counter() - started
    return {
        "new_device_events": total,
        "new_device_s": round(caught_up_s, 3),
        "new_device_events_per_s": round(total / caught_up_s),
        "node_history_build_s": round(build_s, 3),
    }


def node_new_device(events: int) -> dict[str, Any]:
    """Figures for a device linked to a primary that holds `events` events."""
    return asyncio.run(_measure(events))
