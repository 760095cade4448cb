"""Choosing relays for a recipient whose homes are away (SPEC §11.7), on trust, not id order.

The facts come from here (connected peers, the homes of users who share a room with ours, each
peer's standing); the rule and its tiers are `protocol.relay_choice`; the randomness within a
tier is `secrets`, passed in by the node.

State: none of its own but the injected `rng`; the facts are the host's, the standing table's
and the directory's, read on the asyncio loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.identity import Rng, UserId
from hearthmesh.protocol.relay_choice import RelayPolicy, choose_relays

__all__ = ["RelayChooser"]


class RelayChooser:
    """Ranks the connected peers as relays."""

    def __init__(
        self,
        *,
        host: P2PHost,
        standing: PeerStanding,
        directory: HomeDirectory,
        co_members: Callable[[], Awaitable[set[UserId]]],
        rng: Rng,
        policy: RelayPolicy | None = None,
    ) -> None:
        self._host = host
        self._standing = standing
        self._directory = directory
        self._co_members = co_members
        """Users who share a room with our user (contacts included), read from the store."""
        self._rng = rng
        self.policy = policy or RelayPolicy()

    async def choose(self, homes: tuple[str, ...]) -> list[str]:
        """The relays to try, best first, for a recipient whose homes are `homes`."""
        connected = [
            peer
            for peer in self._host.connected_peers()
            if peer not in homes and self._standing.admits(peer)
        ]
        if not connected:
            return []
        trusted = {
            home for user in await self._co_members() for home in self._directory.homes(user)
        }
        candidates = [
            self._standing.relay_candidate(peer, co_member_home=peer in trusted)
            for peer in connected
        ]
        return choose_relays(candidates, self.policy, self._rng)
