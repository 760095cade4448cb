"""Hostile peers pay (SPEC §11.6): refusals are charged to the peer that sent them.

The policy (points, forgiveness, ban lengths) is `protocol.standing`; this adapter feeds it the
refusals of the deliver, hello and link handlers and of the gossip validators, and acts on a
ban: one log line, the peer disconnected, its new streams and connections refused until the
ban ends. Our own node and our user's other homes are never charged.

Every refusal here comes after the Noise handshake, so the peer id is known. Bytes refused
before it (a plaintext or broken handshake, a protocol we do not speak) are refused by libp2p
with no peer id to charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from hearthmesh.node.clock import Clock
from hearthmesh.node.p2p_gossip import GossipMessage, GossipValidator
from hearthmesh.protocol.delivery import DeliveryResult
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.standing import (
    StandingPolicy,
    StandingTable,
    refusal_points,
    result_points,
)

__all__ = ["GossipCheck", "PeerStanding"]

log = logging.getLogger(__name__)

GossipCheck = Callable[[GossipMessage], None]
"""A gossip check that raises `RemoteProtocolError` for a message to refuse (trio thread)."""


class PeerStanding:
    """Points and bans of the peers of one node; lives on the node's event loop."""

    def __init__(
        self,
        *,
        clock: Clock,
        own_peer: str,
        protected: Callable[[str], bool],
        disconnect: Callable[[str], None],
        policy: StandingPolicy | None = None,
    ) -> None:
        self._clock = clock
        self._own_peer = own_peer
        self._protected = protected
        self._disconnect = disconnect
        self._table = StandingTable(policy)
        self._loop = asyncio.get_running_loop()
        self.bans = 0
        """Bans started since the node started."""

    @property
    def policy(self) -> StandingPolicy:
        return self._table.policy

    def admits(self, peer: str) -> bool:
        """False while `peer` is banned: refuse its streams and connections."""
        return not self._table.banned(peer, self._clock.now_ms())

    def points(self, peer: str) -> int:
        """The peer's current points (0 for a peer never charged)."""
        return self._table.points(peer, self._clock.now_ms())

    def refused(self, peer: str, error: RemoteProtocolError, *, whole_frame: bool = True) -> None:
        """A final refusal of what `peer` sent: a whole frame or request, or one item."""
        self._charge(peer, refusal_points(error.code, self.policy, whole_frame=whole_frame), error)

    def refused_results(self, peer: str, results: Iterable[DeliveryResult]) -> None:
        """The results of a batch `peer` delivered: REJECTED items cost, DEFERRED ones do not."""
        points = sum(result_points(result, self.policy) for result in results)
        if points:
            self._charge(peer, points, "rejected envelopes in a batch")

    def refused_threadsafe(self, peer: str, error: RemoteProtocolError) -> None:
        """`refused(..., whole_frame=False)` from another thread (gossip validators)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the node is gone
            self._loop.call_soon_threadsafe(self.refused_item, peer, error)

    def refused_item(self, peer: str, error: RemoteProtocolError) -> None:
        """`refused(..., whole_frame=False)`: one item (a gossip message, an input) refused."""
        self.refused(peer, error, whole_frame=False)

    def gossip_validator(self, check: GossipCheck) -> GossipValidator:
        """A topic validator from `check`; each refusal is charged to the forwarding peer."""

        def validate(message: GossipMessage) -> bool:
            try:
                check(message)
            except RemoteProtocolError as exc:
                if message.forwarder:
                    self.refused_threadsafe(message.forwarder, exc)
                return False
            return True

        return validate

    def _charge(self, peer: str, points: int, why: RemoteProtocolError | str) -> None:
        if points <= 0 or peer == self._own_peer:
            return
        if self._protected(peer):
            log.debug("our own home %s sent what we refused: %s", peer[-8:], why)
            return
        ban = self._table.offend(peer, points, self._clock.now_ms())
        if ban is None:
            log.debug("peer %s charged %d points: %s", peer[-8:], points, why)
            return
        self.bans += 1
        seconds = (ban.until_ms - self._clock.now_ms()) / 1000
        # The one line per ban: refusals during the ban are silent, so a flood cannot flood
        # the log.
        log.warning(
            "peer %s banned for %.0f s (ban %d) after repeated bad input, last: %s",
            peer,
            seconds,
            ban.count,
            why,
        )
        self._disconnect(peer)
