"""The peers whose connections the host never closes as idle: our groups' homes and our
siblings (SPEC §10.17).

The connection manager runs on the trio thread and closes idle connections over its high
watermark; which homes our rooms deliver to is this side's to know. So every
`KEPT_REFRESH_S` the homes of every user sharing a room with ours (as the directory's records
name them) and our own other homes are handed to the host whole (`P2PHost.set_kept`). A room
joined meanwhile: its homes' connections are young or in use until the next refresh.

State: none; the host holds the set.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.rooms.members import RoomMembers

__all__ = ["KEPT_REFRESH_S", "KeptPeers"]

KEPT_REFRESH_S: Final = 30.0
"""How often the set is made again: a read of our rooms' member rows (1,024 members: one read,
a dict lookup each)."""


class _Keeps(Protocol):
    def set_kept(self, peers: frozenset[str]) -> None: ...


class KeptPeers:
    """`run()` keeps the host's kept set current."""

    def __init__(
        self, *, members: RoomMembers, directory: HomeDirectory, homes: OwnHomes, host: _Keeps
    ) -> None:
        self._members = members
        self._directory = directory
        self._homes = homes
        self._host = host

    async def refresh(self) -> frozenset[str]:
        """Hand the host the homes of our co-members and our siblings; returns them."""
        users = await self._members.co_members()
        peers = {peer for user in users for peer in self._directory.homes(user)}
        kept = frozenset(peers | self._homes.sibling_peers())
        self._host.set_kept(kept)
        return kept

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(KEPT_REFRESH_S)
