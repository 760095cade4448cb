"""`hearthmesh bench api`: client to client through the WebSocket API, receipts on.

Two home nodes (alice on A, bob on B) on 127.0.0.1 with LMDB in a temporary directory; A, its
API and the three clients run in this process, B runs as `hearthmesh run` in its own. Every
message a client sends is durable on A before `message_sent`; bob's client acks every message
it receives (`delivered`), so signed receipts flow back while we measure.

- same node: alice's "phone" sends, alice's "laptop" on the same node receives;
- across nodes: alice's phone sends, bob's client on node B receives.

Latency is one message at a time (send → the other client's `message` frame); throughput is
N messages pipelined on one connection until the receiving client has them all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from hearthmesh.node.api import ApiConfig, ApiServer
from hearthmesh.node.config import NodeConfig
from hearthmesh.node.node import Node
from hearthmesh.protocol.identity import decode_user_id, user_id_text
from hearthmesh.tools.bench.stats import percentile
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = ["run"]

_TOKEN = "bench-token"


class _Client:
    """One WebSocket client that records when each message arrived and acks others' messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, own: str, *, ack: bool) -> None:
        self.ws = ws
        self.own = own
        self.ack = ack
        self.sent: dict[str, str] = {}
        self.arrived: dict[str, float] = {}
        self.receipts = 0
        self.changed = asyncio.Event()

    async def read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message.data)
            event = frame["event"]
            if event == "message_sent":
                self.sent[frame["client_id"]] = frame["message_id"]
            elif event == "message":
                self.arrived[frame["message_id"]] = time.perf_counter()
                if self.ack and frame["sender_id"] != self.own:
                    await self.ws.send_str(
                        json.dumps(
                            {
                                "event": "ack",
                                "message_id": frame["message_id"],
                                "status": "delivered",
                            }
                        )
                    )
            elif event == "receipt":
                self.receipts += 1
            elif event == "error":
                raise RuntimeError(f"bench client got an error: {frame}")
            self.changed.set()

    async def wait(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()


async def _measure(
    sender: _Client, receiver: _Client, room: str, *, samples: int, burst: int, tag: str
) -> dict[str, float]:
    latencies: list[float] = []
    for i in range(samples):
        client_id = f"{tag}-l{i}"
        start = time.perf_counter()
        await sender.ws.send_str(
            json.dumps(
                {"event": "send", "room_id": room, "message": "x" * 200, "client_id": client_id}
            )
        )
        await sender.wait(lambda c=client_id: c in sender.sent)  # type: ignore[misc]
        message_id = sender.sent[client_id]
        await receiver.wait(lambda m=message_id: m in receiver.arrived)  # type: ignore[misc]
        latencies.append((receiver.arrived[message_id] - start) * 1000)
    before = len(receiver.arrived)
    start = time.perf_counter()
    for i in range(burst):
        await sender.ws.send_str(
            json.dumps(
                {"event": "send", "room_id": room, "message": "y" * 200, "client_id": f"{tag}-t{i}"}
            )
        )
    await receiver.wait(lambda: len(receiver.arrived) >= before + burst)
    await sender.wait(lambda: all(f"{tag}-t{i}" in sender.sent for i in range(burst)))
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "msgs_per_s": round(burst / elapsed, 1),
    }


async def _bench(quick: bool) -> dict[str, Any]:
    samples, burst = (50, 300) if quick else (300, 3000)
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-api-") as tmp:
        # Bob's home node and API in their own process, as a person runs it.
        bob = await spawn_home(Path(tmp) / "b", name="bob")
        try:
            return await _with_bob(Path(tmp), bob, samples, burst)
        finally:
            await bob.terminate()


async def _with_bob(tmp: Path, bob: HomeProcess, samples: int, burst: int) -> dict[str, Any]:
    config = NodeConfig(
        data_dir=tmp / "a", listen_addrs=("/ip4/127.0.0.1/tcp/0",), retry_poll_ms=50
    )
    async with (
        Node(config) as node_a,
        ApiServer(node_a, ApiConfig(token=_TOKEN, port=0)) as api_a,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {_TOKEN}"}) as http,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {bob.token}"}) as bob_http,
    ):
        await node_a.connect(bob.addr)
        alice = user_id_text(node_a.user_id)
        room = (await node_a.open_direct(decode_user_id(bob.user_text))).hex()
        async with bob_http.post(bob.api + "/v1/conversation", json={"recipient_id": alice}):
            pass
        async with (
            http.ws_connect(api_a.url + "/v1/ws") as phone_ws,
            http.ws_connect(api_a.url + "/v1/ws") as laptop_ws,
            bob_http.ws_connect(bob.api + "/v1/ws") as bob_ws,
            asyncio.TaskGroup() as group,
        ):
            phone = _Client(phone_ws, alice, ack=False)
            laptop = _Client(laptop_ws, alice, ack=False)
            bob_client = _Client(bob_ws, bob.user_text, ack=True)
            readers = [group.create_task(c.read()) for c in (phone, laptop, bob_client)]
            await _measure(phone, bob_client, room, samples=10, burst=50, tag="warm")
            same = await _measure(phone, laptop, room, samples=samples, burst=burst, tag="s")
            cross = await _measure(phone, bob_client, room, samples=samples, burst=burst, tag="c")
            for reader in readers:
                reader.cancel()
            receipts = phone.receipts + laptop.receipts
    return {
        "samples": samples,
        "burst": burst,
        "payload_bytes": 200,
        "same_node_p50_ms": same["p50_ms"],
        "same_node_p99_ms": same["p99_ms"],
        "same_node_msgs_per_s": same["msgs_per_s"],
        "cross_node_p50_ms": cross["p50_ms"],
        "cross_node_p99_ms": cross["p99_ms"],
        "cross_node_msgs_per_s": cross["msgs_per_s"],
        "receipt_events_seen_by_alice": receipts,
        "layout": "alice's node, API and the three clients in this process; bob's node and API "
        "in a `hearthmesh run` process",
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the client API benchmark (see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick))
