"""`DeliverPipe`: one deliver stream written as fast as the kit likes, its answers read as
they come, for a flood that does not wait for acks (SPEC §11 allows one batch in flight; a
hostile peer ignores that). Only the stream's flow control slows the writer down.
State owned here: the pipe's stream, its batch numbers and the batches not yet answered.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    BatchItem,
    ProtocolErrorFrame,
    decode_frame,
    encode_deliver,
)
from hearthmesh.protocol.errors import HearthError

from .peer import HostilePeer, code_name, result_outcome

__all__ = ["DeliverPipe", "deliver_pipe"]


class DeliverPipe:
    """Batches written without waiting; `outcomes` counts every item's answer."""

    def __init__(self, stream: FrameStream, certificates: Sequence[bytes]) -> None:
        self._stream = stream
        self._certificates = list(certificates)
        self._batch_ids = itertools.count(1)
        self._in_flight: dict[int, int] = {}
        """Items of each batch written and not yet answered."""
        self.outcomes: Counter[str] = Counter()
        self.closed = asyncio.Event()
        """Set when the target closed or reset the stream (or sent an ERROR frame)."""
        self._answered = asyncio.Event()

    async def send(self, items: Sequence[BatchItem]) -> bool:
        """Write one batch; False once the stream is gone."""
        if self.closed.is_set():
            return False
        batch_id = next(self._batch_ids)
        self._in_flight[batch_id] = len(items)
        self._answered.clear()
        try:
            await self._stream.write_frame(
                encode_deliver(batch_id, self._certificates, list(items))
            )
        except P2PError:
            self.end()
            return False
        return True

    async def read_answers(self) -> None:
        """Count answers until the stream ends."""
        try:
            async for data in self._stream:
                answer = decode_frame(data)
                if isinstance(answer, Ack):
                    self._in_flight.pop(answer.batch_id, None)
                    if not self._in_flight:
                        self._answered.set()
                    self.outcomes.update(result_outcome(r) for r in answer.results)
                elif isinstance(answer, ProtocolErrorFrame):
                    self.outcomes[f"ERROR:{code_name(answer.code)}"] += 1
                    break
        except HearthError:
            pass
        self.end()

    async def wait_answered(self) -> None:
        """Until every batch written was answered (or the stream is gone)."""
        while self._in_flight and not self.closed.is_set():
            await self._answered.wait()

    def end(self) -> None:
        """Stop counting: what is still in flight counts as unanswered."""
        if not self.closed.is_set():
            self.closed.set()
            if unanswered := sum(self._in_flight.values()):
                self.outcomes["unanswered"] += unanswered
            self._in_flight.clear()
            self._answered.set()


@asynccontextmanager
async def deliver_pipe(kit: HostilePeer, peer: str) -> AsyncIterator[DeliverPipe]:
    """A pipe to `peer` with the kit's certificate, its reader running inside the block.

    Raises:
        P2PError: the target would not open the stream (a ban, or it is down).
    """
    stream = await kit.host.open_stream(peer, DELIVER_PROTOCOL)
    pipe = DeliverPipe(stream, [kit.stranger.certificate_bytes])
    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(pipe.read_answers())
            yield pipe
            reader.cancel()
    finally:
        pipe.end()
        await stream.reset()
