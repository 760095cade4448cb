"""The gossip fast path's sender: publishes off the caller's path, dropping when it falls behind.

A send is done when it is durable (ARCHITECTURE §3 step 2); the gossip copy is a best-effort extra
(at most once), so `send` never waits for it. The queue is bounded: past `MAX_QUEUED` a new
payload is dropped and counted — the guaranteed path still carries it.

State: the bounded queue of payloads to publish and the count dropped; on the asyncio loop,
filled by `Outgoing` and drained by `run`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.errors import HearthError

__all__ = ["MAX_QUEUED", "GossipPublisher"]

log = logging.getLogger(__name__)

MAX_QUEUED: Final = 4096


class GossipPublisher:
    """Owned by the node's task group: `run` until cancelled."""

    def __init__(self, host: P2PHost) -> None:
        self._host = host
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_QUEUED)
        self.dropped = 0

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        """Queue one payload for `topic`; drops it (counted) when the queue is full."""
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, ... drop
                log.warning("gossip fast path behind: %d payloads dropped", self.dropped)

    async def run(self) -> None:
        while True:
            topic, payload = await self._queue.get()
            try:
                await self._host.publish(topic, payload)
            except HearthError as exc:  # no peers yet, or a validator race: the outbox delivers
                log.debug("gossip publish to %s failed: %s", topic[-12:], exc)
