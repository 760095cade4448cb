"""Gossip messages and subscriptions as asyncio sees them (no trio, no libp2p here).

Gossip is the at-most-once fast path (ARCHITECTURE §3 step 3). A subscription buffers at most
`maxsize` messages; when the consumer falls behind, newer messages are dropped and counted
(`dropped`), never queued without bound and never allowed to block the trio thread. Delivery
that matters goes again over the ack-and-retry stream path.

State: each `Subscription` owns its bounded buffer, its counts and whether it ended; the trio
thread hands it messages through the asyncio loop (`TrioThread.to_asyncio`), so only the loop
touches it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

__all__ = [
    "SUBSCRIPTION_QUEUE_SIZE",
    "GossipMessage",
    "GossipValidator",
    "MessageIdFn",
    "Subscription",
]

log = logging.getLogger(__name__)

SUBSCRIPTION_QUEUE_SIZE: Final = 1024
"""Default number of undelivered messages one subscription holds before dropping new ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipMessage:
    """One validated gossipsub message."""

    topic: str
    """The topic it arrived on."""
    origin: str
    """Peer id (base58) of the publisher; the libp2p signature over it was checked."""
    data: bytes
    """The payload."""
    msg_id: bytes
    """Gossip message id: the app's id function over `data` if one is configured."""
    seqno: int
    """The publisher's gossipsub sequence number."""
    forwarder: str = ""
    """Peer id of the neighbour that passed it to us, as validators see it (it answers for
    what it forwards: SPEC §11.6); empty where unknown or for our own publishes."""


GossipValidator = Callable[[GossipMessage], bool]
"""Runs on the trio thread before delivery or forwarding: must be pure, fast and thread-safe.
False (or an exception) rejects the message: it is never delivered or forwarded."""

MessageIdFn = Callable[[bytes], bytes]
"""Maps a payload to its gossip message id, so one envelope dedupes across publishers."""


class Subscription:
    """An async iterator of `GossipMessage`s on one topic; iteration ends at unsubscribe."""

    def __init__(
        self,
        topic: str,
        *,
        maxsize: int,
        unsubscribe: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        self.topic = topic
        """The subscribed topic."""
        self.maxsize = maxsize
        """Undelivered messages held before new ones are dropped."""
        self.delivered = 0
        """Messages handed to this subscription (including dropped ones: see `dropped`)."""
        self.dropped = 0
        """Messages dropped because the consumer fell `maxsize` behind."""
        self._unsubscribe = unsubscribe
        self._buffer: collections.deque[GossipMessage] = collections.deque()
        self._nonempty = asyncio.Event()
        self._ended = False

    def deliver_nowait(self, message: GossipMessage) -> None:
        """Called on the asyncio loop by the bridge; drops (and counts) when full."""
        if self._ended:
            return
        self.delivered += 1
        if len(self._buffer) >= self.maxsize:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # log at 1, 2, 4, 8, ... drops
                log.warning(
                    "gossip subscription %r full (%d): %d messages dropped so far",
                    self.topic,
                    self.maxsize,
                    self.dropped,
                )
            return
        self._buffer.append(message)
        self._nonempty.set()

    def end(self) -> None:
        """Stop the iteration once the buffer is drained (unsubscribe or host stop)."""
        self._ended = True
        self._nonempty.set()

    @property
    def ended(self) -> bool:
        """True after unsubscribe or host stop."""
        return self._ended

    def get_nowait(self) -> GossipMessage | None:
        """The next buffered message, or None."""
        if self._buffer:
            return self._buffer.popleft()
        return None

    async def get(self) -> GossipMessage:
        """The next message.

        Raises:
            StopAsyncIteration: the subscription ended and its buffer is drained.
        """
        while not self._buffer:
            if self._ended:
                raise StopAsyncIteration
            self._nonempty.clear()
            await self._nonempty.wait()
        return self._buffer.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> GossipMessage:
        return await self.get()

    async def unsubscribe(self) -> None:
        """Leave the topic; iteration ends after the buffered messages. Idempotent."""
        if not self._ended:
            self.end()
            await self._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unsubscribe()
