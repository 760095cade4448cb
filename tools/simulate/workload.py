"""The chat workload of a `hearthmesh simulate` run (SPEC §20.4): one WebSocket client per
device, as an app would be, sending into one group and acking what it gets.

A client reconnects with its last cursor after its node was killed and restarted (SPEC
§15.4.3), so what it shows is the device's history exactly once. It acks every message of
another user `delivered` (SPEC §16) and records when, so the checker can hold receipts to it.

State: per client, what it sent, saw, acked and was told (`DeviceClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hearthmesh.tools.simulate.checker import Acked, Receipt, Seen
from hearthmesh.tools.simulate.mesh import SimNode

__all__ = ["DeviceClient", "Send"]

_RECONNECT_S = 0.3
_SEND_S = 2.0


@dataclass
class Send:
    client_id: str
    device: int
    sent_at: float
    connection: int = 1
    """Which connection of its client it went on."""
    message_id: str | None = None
    acked_at: float | None = None
    settled: bool = False
    """Its fate is known: acked (`message_sent`), refused (`error`), or its connection ended
    first (then it may be durable and delivered, but it is never judged as acked)."""

    def acked(self) -> Acked | None:
        if self.message_id is None or self.acked_at is None:
            return None
        return Acked(self.message_id, self.device, self.sent_at, self.acked_at)


@dataclass
class DeviceClient:
    """One client of one device's node, reconnecting by cursor across kills."""

    node: SimNode
    room: str
    start: float
    user_index: dict[str, int]
    """user id text -> user index, to name receipts' users."""
    seen: list[Seen] = field(default_factory=list)
    sends: dict[str, Send] = field(default_factory=dict)
    acks: dict[str, float] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    resyncs: int = 0
    connections: int = 0
    cursor: str | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.start

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def wait_connected(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        """Stay connected while the node is up; until cancelled."""
        while True:
            if self.node.up:
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    await self._session()
            self._ready.clear()
            await asyncio.sleep(_RECONNECT_S)

    async def send(self, serial: int) -> bool:
        """Send one message into the room; False when not connected."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        client_id = f"d{self.node.index}-{serial}"
        self.sends[client_id] = Send(client_id, self.node.index, self.now(), self.connections)
        frame = {"event": "send", "room_id": self.room, "client_id": client_id}
        text = json.dumps({**frame, "message": f"m{serial} from {client_id}"})
        try:  # bounded: a socket whose node died unseen (its FIN lost) must not stall the load
            await asyncio.wait_for(ws.send_str(text), _SEND_S)
        except (ConnectionError, RuntimeError, aiohttp.ClientError, TimeoutError):
            self.sends[client_id].settled = True  # not sent: nothing will answer it
            return False
        return True

    async def _session(self) -> None:
        async with self.node.client() as api, api.websocket(self.cursor) as ws:
            self._ws = ws
            self.connections += 1
            try:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        await self._frame(ws, json.loads(message.data))
            finally:
                self._ws = None
                self._ready.clear()
                self._connection_ended()

    def in_flight(self) -> int:
        """Sends whose `message_sent` or `error` may still come: until then a message may be
        acked that no device has yet, so nothing can be judged converged."""
        return sum(not s.settled for s in self.sends.values())

    def _connection_ended(self) -> None:
        """No answer comes for the sends of the connection that ended."""
        for send in self.sends.values():
            if send.connection == self.connections:
                send.settled = True

    async def _frame(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        if "cursor" in frame:
            self.cursor = frame["cursor"]
        if event == "ready":
            self._ready.set()
        elif event == "resync":
            self.resyncs += 1
        elif event == "message_sent":
            send = self.sends.get(frame["client_id"])
            if send is not None:
                send.message_id, send.acked_at = frame["message_id"], self.now()
                send.settled = True
        elif event == "message" and frame.get("room_id") == self.room:
            self.seen.append(
                Seen(
                    frame["message_id"],
                    frame["sender_device"],
                    frame["seq"],
                    self.now(),
                    self.connections,
                )
            )
            if frame["sender_id"] != self.node.user_text and frame["message_id"] not in self.acks:
                self.acks[frame["message_id"]] = self.now()
                ack = {"event": "ack", "message_id": frame["message_id"], "status": "delivered"}
                await ws.send_str(json.dumps(ack))
        elif event == "receipt" and frame.get("room_id") == self.room:
            user = self.user_index.get(frame["user_id"], -1)
            self.receipts.append(Receipt(frame["message_id"], user, frame["status"], self.now()))
        elif event == "error":
            self.errors.append(frame)
            refused = self.sends.get(str(frame.get("client_id")))
            if refused is not None:
                refused.settled = True
