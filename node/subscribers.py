"""Fan-out of node events to the app's subscribers, bounded so a slow reader costs only itself.

Each subscriber has its own queue of at most `MAX_QUEUED_EVENTS`. A subscriber that falls that
far behind is ended with `SubscriberTooSlow` rather than growing memory without bound or
slowing the node; everything it missed is in the store (history, statuses) to re-read.

`Logged` (a batch's arrival-log entries) is built and emitted only while a subscriber asked for
it (a client feed): a node with no feed pays nothing for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Final

from hearthmesh.node.events import NodeEvent
from hearthmesh.protocol.errors import HearthError

__all__ = ["MAX_QUEUED_EVENTS", "EventHub", "SubscriberTooSlow"]

MAX_QUEUED_EVENTS: Final = 10_000


class SubscriberTooSlow(HearthError):
    """The subscriber fell more than MAX_QUEUED_EVENTS behind and was ended."""


_END: Final = object()


class EventHub:
    """Emits each event to every current subscriber."""

    def __init__(self, *, max_queued: int = MAX_QUEUED_EVENTS) -> None:
        self._max = max_queued
        self._queues: set[asyncio.Queue[object]] = set()
        self._logged: set[asyncio.Queue[object]] = set()
        """The subscribers that asked for `Logged` (every subscriber gets it while one does)."""
        self.takes_logged = False
        """Does a subscriber take `Logged`? While none does, the receiver builds no entries
        (an attribute, not a property: it is read on every arriving batch)."""
        self._closed = False

    def emit(self, event: NodeEvent) -> None:
        for queue in list(self._queues):
            if queue.qsize() >= self._max:
                self._end(queue)
                queue.put_nowait(SubscriberTooSlow(f"more than {self._max} events behind"))
            else:
                queue.put_nowait(event)

    def close(self) -> None:
        """End every subscription (the node stops)."""
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(_END)
        self._queues.clear()
        self._logged.clear()
        self.takes_logged = False

    def subscribe(self, *, logged: bool = False) -> AsyncGenerator[NodeEvent]:
        """Events from this call on (not from the first iteration) until the node stops;
        `logged`: with `Logged` (a client feed's)."""
        queue: asyncio.Queue[object] = asyncio.Queue()  # bounded by emit(), one slot over max
        if self._closed:
            queue.put_nowait(_END)
        else:
            self._queues.add(queue)
            if logged:
                self._logged.add(queue)
                self.takes_logged = True
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[object]) -> AsyncGenerator[NodeEvent]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, SubscriberTooSlow):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._end(queue)

    def _end(self, queue: asyncio.Queue[object]) -> None:
        self._queues.discard(queue)
        self._logged.discard(queue)
        self.takes_logged = bool(self._logged)
