"""A peer's new inbound connections have a budget: a burst, then a rate (SPEC §11.6.6).

Each connection costs us identify, our hello and a pubsub hello. The prefix limits count new
identities (and loopback is exempt from them), and the greeting-again budget (`pubsub_hello`)
covers only a connection closed while another stays up, so one identity that closed all its
connections and dialled again had no bound in time. This budget is per peer id, loopback
included: past it the connection is closed as soon as libp2p announces it, before the node
counts it in (so before our hello), and the peer is charged one item. Our user's other homes
(`protect`) are exempt, never turned away nor charged: a sibling that reconnects in a loop
(a laptop on a flaky link) is our own device, and what it syncs is ours.

State (trio thread): a token bucket per peer (`RateLimiter`: at most `MAX_TRACKED_CLIENTS`,
the least recently seen forgotten first) and how many connections were turned away.
"""

from __future__ import annotations

from collections.abc import Callable

from hearthmesh.node.clock import Clock
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.protocol.errors import RemoteProtocolError, TooManyStreams
from hearthmesh.protocol.inbound import InboundPolicy

__all__ = ["ConnectionBudget"]


class ConnectionBudget:
    """`admits(peer, inbound)` for each connection libp2p announces (the host asks, on the trio
    thread); `refused(peer, error)` charges."""

    def __init__(
        self,
        policy: InboundPolicy,
        refused: Callable[[str, RemoteProtocolError], None],
        clock: Clock,
    ) -> None:
        self._limiter = RateLimiter(policy.connections_per_min / 60, policy.connection_burst, clock)
        self._refused = refused
        self._why = (
            f"a connection past the peer's budget ({policy.connection_burst} at once, "
            f"{policy.connections_per_min:g} a minute)"
        )
        self._protected: Callable[[str], bool] = lambda _peer: False
        self.turned_away = 0
        """Connections closed for being past their peer's budget (tests and status)."""

    def protect(self, protected: Callable[[str], bool]) -> None:
        """Exempt the peers `protected` names (asked on the trio thread, so it must be safe to
        call from there: our homes' set is replaced whole, never changed in place)."""
        self._protected = protected

    def admits(self, peer: str, *, inbound: bool) -> bool:
        """False for an inbound connection past its peer's budget; the peer is charged."""
        if not inbound or self._protected(peer):  # we dialled: our redials are not its churn
            return True
        if self._limiter.take(peer):
            return True
        self.turned_away += 1
        self._refused(peer, TooManyStreams(self._why))
        return False
