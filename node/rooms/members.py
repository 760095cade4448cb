"""Room members as the event loop reads them (SPEC §12).

State: none. `RoomRegistry` is the one owner of member sets in memory (and the only writer of
the store's member rows); this reads its state without a store hop when memory holds the room,
and loads it through the store's thread when not.
"""

from __future__ import annotations

from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["RoomMembers", "room_members"]


class RoomMembers:
    """Member sets of rooms, and the users who share a room with ours."""

    def __init__(self, *, store: AsyncStore, rooms: RoomRegistry, user: UserId) -> None:
        self._store = store
        self._rooms = rooms
        self._user = user

    async def of(self, room: RoomId) -> frozenset[UserId]:
        """The members of `room` now (empty for a room this node does not know)."""
        state = self._rooms.view(room)
        if state is not None:
            return frozenset(state.members)
        return frozenset(await self._store.run(self._rooms.members, self._store.store, room))

    async def co_members(self) -> set[UserId]:
        """Users who share a room with ours (contacts included): trusted relays' users."""
        return await self._store.read(_co_members, self._store.store, self._user)


def _co_members(store: Store, user: UserId) -> set[UserId]:
    return room_members(store, store.rooms_of(user))


def room_members(store: Store, rooms: list[RoomId]) -> set[UserId]:
    """Everyone in `rooms`, from the store's member rows (one read)."""
    return {member.user for room in rooms for member in store.members(room)}
