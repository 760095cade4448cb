"""The control of `bench api-control` (tools/bench/control_server.py, tools/bench/api_control.py):
a minimal same-node server in a process of its own, which answers and relays each send after
its one durable commit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from hearthmesh.storage.keys import Table
from hearthmesh.storage.lmdb_store import LmdbEngine
from hearthmesh.tools.bench.api_control import control_server
from hearthmesh.tools.client import ApiClient


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads((await ws.receive()).data)
    return frame


async def test_a_send_is_committed_answered_and_relayed_to_every_client(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with asyncio.timeout(30):
        async with (
            control_server(store) as (url, counts),
            ApiClient(url, "any") as api,
            api.websocket() as phone,
            api.websocket() as laptop,
        ):
            for ws in (phone, laptop):  # both connected before the send
                assert (await _next(ws))["event"] == "ready"
            send = {"event": "send", "room_id": "r", "message": "hi", "client_id": "c1"}
            await phone.send_str(json.dumps(send))
            sent = await _next(phone)
            assert sent["event"] == "message_sent" and sent["client_id"] == "c1"
            echo, relayed = await _next(phone), await _next(laptop)
            for frame in (echo, relayed):  # the sender's echo, then the other client's
                assert frame["event"] == "message"
                assert frame["message_id"] == sent["message_id"]
                assert frame["body"] == "hi"
        assert counts == {"commits": 1, "sends": 1}
    engine = LmdbEngine(store)  # the frame is durable in the node's own engine
    try:
        with engine.read() as txn:
            stored = txn.get(Table.HISTORY, (1).to_bytes(8, "big"))
    finally:
        engine.close()
    assert stored is not None and json.loads(stored)["client_id"] == "c1"


async def test_without_a_store_nothing_is_committed() -> None:
    async with asyncio.timeout(30):
        async with (
            control_server(None) as (url, counts),
            ApiClient(url, "any") as api,
            api.websocket() as phone,
        ):
            assert (await _next(phone))["event"] == "ready"
            send = {"event": "send", "room_id": "r", "message": "x", "client_id": "c1"}
            await phone.send_str(json.dumps(send))
            assert (await _next(phone))["event"] == "message_sent"
        assert counts == {"commits": 0, "sends": 1}
