"""The order our user's sends of a room are sealed in (SPEC §15.4.5): the order they were
accepted (a WebSocket's frames, calls of `Node.send`), whatever each awaits before its seal.

A send takes a `SealTurn` when it is accepted, without awaiting; what it awaits then (a blob's
seal read, a home's capability answer, SPEC §20.7) runs alongside the others', and it waits for
its turn only just before it takes its sequence number and HLC. Whoever takes a turn holds it
in a `with` block, whose exit releases it whatever happened (sealed, failed, cancelled); the
sealer releases it earlier, as soon as the envelope is sealed, so the room's next send does not
also wait for this one's commit.

State: `SealOrder` owns, per room with a send not yet sealed, the future the next send waits on;
a room's entry goes once its last turn is released, so it holds no more than the sends pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hearthmesh.protocol.envelope import RoomId

__all__ = ["SealOrder", "SealTurn", "out_of_turn"]


class SealTurn:
    """One send's place in its room's order of seals; a context manager whose exit releases
    it (for its taker: `with order.take(room) as turn:`)."""

    __slots__ = ("_before", "_done", "_ended")

    def __init__(
        self,
        before: asyncio.Future[None] | None,
        done: asyncio.Future[None],
        ended: Callable[[asyncio.Future[None]], None] | None = None,
    ) -> None:
        self._before = before
        """Released once every send of the room accepted before this one is."""
        self._done = done
        self._ended = ended
        """Told as `done` is set (the order's bookkeeping): in the same step, not through a
        done-callback, which would be a callback ready on the loop just as the send's commit
        asks whether the loop is idle (`AsyncStore._commits_at_once`, ARCHITECTURE §10)."""

    async def wait(self) -> None:
        """Until every send of the room accepted before this one has sealed or given up."""
        if self._before is not None and not self._before.done():
            await asyncio.shield(self._before)  # our cancellation must not release theirs

    def release(self) -> None:
        """This send has sealed or given up (any number of times). The next send's turn comes
        from the next loop iteration on, never before the sends ahead of this one released
        theirs: a send cancelled early must not let a later one pass an earlier one."""
        if self._done.done():
            return
        before = self._before
        if before is None or before.done():
            self._end()
        else:
            before.add_done_callback(self._pass_on)

    def _pass_on(self, _: asyncio.Future[None]) -> None:
        if not self._done.done():
            self._end()

    def _end(self) -> None:
        self._done.set_result(None)
        if self._ended is not None:
            self._ended(self._done)

    def __enter__(self) -> SealTurn:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def out_of_turn() -> SealTurn:
    """A turn in no room's order: it waits for no send and no send waits for it (a kind our
    node seals as soon as it is ready, `protocol.receipts.OUT_OF_TURN_KINDS`)."""
    return SealTurn(None, asyncio.get_running_loop().create_future())


class SealOrder:
    """Hands out the turns of each room's sends in the order they are taken."""

    def __init__(self) -> None:
        self._last: dict[RoomId, asyncio.Future[None]] = {}

    def take(self, room: RoomId) -> SealTurn:
        """The turn after every one taken before in `room`; hold it in a `with` block."""
        before = self._last.get(room)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[room] = done
        return SealTurn(before, done, lambda ended: self._drop(room, ended))

    def __len__(self) -> int:
        """Rooms with a turn not yet released."""
        return len(self._last)

    def _drop(self, room: RoomId, done: asyncio.Future[None]) -> None:
        if self._last.get(room) is done:  # no later turn was taken: nothing left to order
            del self._last[room]
