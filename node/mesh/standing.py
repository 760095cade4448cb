"""Hostile peers pay (SPEC §11.6): refusals are charged to the peer that sent them.

The policy (points, forgiveness, ban lengths) is `protocol.standing`; this adapter feeds it the
refusals of the deliver, hello and link handlers and of the gossip validators, and acts on a
ban: one log line, the peer disconnected, its new streams and connections refused until the
ban ends. Our own node and our user's other homes are never charged.

Every refusal here comes after the Noise handshake, so the peer id is known. Bytes refused
before it (a plaintext or broken handshake, a protocol we do not speak) are refused by libp2p
with no peer id to charge.

Peer ids are free, so each connection also counts against its address prefix
(`protocol.prefixes`, SPEC §11.6.5): new identities per prefix are capped, and a prefix whose
identities keep getting banned is banned itself. The standing also remembers, per connected
peer, how long it has been connected and how many exchanges with it went well: the facts that
relay choice ranks on (SPEC §11.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from hearthmesh.node.clock import Clock
from hearthmesh.node.p2p.gossip import GossipMessage, GossipValidator
from hearthmesh.protocol.delivery import DeliveryResult
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.prefixes import PrefixPolicy, PrefixTable, address_prefix
from hearthmesh.protocol.relay_choice import RelayCandidate
from hearthmesh.protocol.standing import (
    StandingPolicy,
    StandingTable,
    answer_points,
    batch_points,
    refusal_points,
)

__all__ = ["AnswerCharge", "GossipCheck", "PeerStanding", "RefusalCharge"]

log = logging.getLogger(__name__)

GossipCheck = Callable[[GossipMessage], None]
"""A gossip check that raises `RemoteProtocolError` for a message to refuse (trio thread)."""

RefusalCharge = Callable[[str, RemoteProtocolError], None]
"""`charge(peer, error)`: a final refusal of what `peer` sent on one protocol (a whole frame);
`PeerStanding.charger` makes one."""


class AnswerCharge(Protocol):
    """`PeerStanding.bad_answer`: an answer to our request on `protocol` cannot be right."""

    def __call__(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None: ...


class PeerStanding:
    """Points and bans of the peers of one node; lives on the node's event loop."""

    def __init__(
        self,
        *,
        clock: Clock,
        own_peer: str,
        protected: Callable[[str], bool],
        disconnect: Callable[[str], None],
        gate_prefix: Callable[[str, float, float], None] | None = None,
        policy: StandingPolicy | None = None,
        prefix_policy: PrefixPolicy | None = None,
    ) -> None:
        self._clock = clock
        self._own_peer = own_peer
        self._protected = protected
        self._disconnect = disconnect
        self._gate_prefix = gate_prefix
        """Refuses a banned prefix's connections before their handshake (node.p2p.prefix_gate)."""
        self._table = StandingTable(policy)
        self._prefixes = PrefixTable(prefix_policy)
        self._loop = asyncio.get_running_loop()
        # Per connected peer (forgotten at its disconnection, so bounded by connections):
        self._prefix_of: dict[str, str] = {}
        self._connected_at_ms: dict[str, int] = {}
        self._exchanges: dict[str, int] = {}
        self._unadmitted: set[str] = set()
        """Connected peers whose connection was refused (their streams too, until it closes)."""
        self.bans = 0
        """Bans started since the node started."""
        self.prefix_bans = 0
        """Prefix bans started since the node started."""
        self.charged_by_protocol: dict[str, int] = {}
        """Charges that cost a peer points since the node started, by the protocol (or the
        kind of input, for what is not a stream protocol's) it came on: the status's black
        box (SPEC §11.6.7). Keys are ours, never a peer's: bounded by what the node serves."""

    @property
    def policy(self) -> StandingPolicy:
        return self._table.policy

    def admits(self, peer: str) -> bool:
        """False while `peer` or its prefix is banned, or its connection was refused: refuse
        its streams and connections."""
        now_ms = self._clock.now_ms()
        if self._table.banned(peer, now_ms) or peer in self._unadmitted:
            return False
        prefix = self._prefix_of.get(peer)
        return (
            prefix is None
            or not self._prefixes.banned(prefix, now_ms)
            or self._vouched(peer, now_ms)
        )

    def connected(self, peer: str, ip: str | None) -> bool:
        """A connection of `peer` from `ip` opened: False to refuse it (disconnect), because
        the peer or its prefix is banned or the prefix brought too many new identities."""
        now_ms = self._clock.now_ms()
        self._connected_at_ms.setdefault(peer, now_ms)
        if peer == self._own_peer or self._protected(peer):
            return True
        prefix = None
        if ip is not None:
            prefix = address_prefix(ip, exempt_loopback=self._prefixes.policy.exempt_loopback)
        if prefix is not None:
            self._prefix_of[peer] = prefix
        admitted = not self._table.banned(peer, now_ms) and (
            prefix is None or self._prefixes.admit(prefix, peer, now_ms)
        )
        if not admitted:
            self._unadmitted.add(peer)
            log.debug("connection of %s from %s refused", peer[-8:], prefix or ip)
        return admitted

    def disconnected(self, peer: str) -> None:
        """The last connection of `peer` closed."""
        self._prefix_of.pop(peer, None)
        self._connected_at_ms.pop(peer, None)
        self._exchanges.pop(peer, None)
        self._unadmitted.discard(peer)

    def _vouched(self, peer: str, now_ms: int) -> bool:
        """A peer whose own record here vouches for it (SPEC §11.6.5): enough good exchanges
        on this connection and no points. Its prefix's ban does not cut it off, so a flood from
        its network does not take away a correspondent who was already talking to us."""
        return (
            self._exchanges.get(peer, 0) >= self._prefixes.policy.vouched_exchanges
            and self._table.points(peer, now_ms) == 0
        )

    def exchanged(self, peer: str) -> None:
        """An exchange with a connected `peer` went well (a batch or an ack, SPEC §11.7)."""
        if peer in self._connected_at_ms:
            self._exchanges[peer] = self._exchanges.get(peer, 0) + 1

    def relay_candidate(self, peer: str, *, co_member_home: bool) -> RelayCandidate:
        """What relay choice (SPEC §11.7) needs to know of a connected peer."""
        now_ms = self._clock.now_ms()
        return RelayCandidate(
            peer=peer,
            co_member_home=co_member_home,
            connected_ms=now_ms - self._connected_at_ms.get(peer, now_ms),
            exchanges=self._exchanges.get(peer, 0),
            points=self._table.points(peer, now_ms),
        )

    def points(self, peer: str) -> int:
        """The peer's current points (0 for a peer never charged)."""
        return self._table.points(peer, self._clock.now_ms())

    def refused(
        self, peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
    ) -> None:
        """A final refusal of what `peer` sent on `protocol`: a whole frame or request, or one
        item."""
        points = refusal_points(error.code, self.policy, whole_frame=whole_frame)
        self._charge(peer, points, error, protocol)

    def charger(self, protocol: str) -> RefusalCharge:
        """`refused` for a service that serves or reads `protocol` (a whole frame each)."""
        return functools.partial(self.refused, protocol=protocol)

    def refused_results(
        self, peer: str, results: Iterable[DeliveryResult], *, protocol: str
    ) -> None:
        """The results of a batch `peer` delivered: REJECTED items cost, DEFERRED ones do not,
        but a batch with envelopes over a relay bound does (`protocol.standing.batch_points`);
        a batch with nothing to charge is an exchange that went well."""
        points = batch_points(results, self.policy)
        if points:
            self._charge(peer, points, "rejected or over-quota envelopes in a batch", protocol)
        else:
            self.exchanged(peer)

    def bad_answer(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None:
        """`peer`'s answer to our own request on `protocol` cannot be right (SPEC §11.6.1)."""
        self._charge(peer, answer_points(error.code, self.policy), error, protocol)

    def answer_charger(self, protocol: str) -> RefusalCharge:
        """`bad_answer` for an asker on `protocol`."""
        return functools.partial(self.bad_answer, protocol=protocol)

    def refused_threadsafe(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None:
        """`refused_item` from another thread (gossip validators)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the node is gone
            self._loop.call_soon_threadsafe(
                functools.partial(self.refused_item, peer, error, protocol=protocol)
            )

    def refused_item(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None:
        """`refused(..., whole_frame=False)`: one item (a gossip message, an input) refused."""
        self.refused(peer, error, protocol=protocol, whole_frame=False)

    def gossip_validator(self, check: GossipCheck, *, topic: str) -> GossipValidator:
        """A topic validator from `check`; each refusal is charged to the forwarding peer,
        counted under `topic` (a topic or a topic prefix)."""

        def validate(message: GossipMessage) -> bool:
            try:
                check(message)
            except RemoteProtocolError as exc:
                if message.forwarder:
                    self.refused_threadsafe(message.forwarder, exc, protocol=topic)
                return False
            return True

        return validate

    def _charge(
        self, peer: str, points: int, why: RemoteProtocolError | str, protocol: str
    ) -> None:
        if points <= 0 or peer == self._own_peer:
            return
        if self._protected(peer):
            log.debug("our own home %s sent what we refused: %s", peer[-8:], why)
            return
        self.charged_by_protocol[protocol] = self.charged_by_protocol.get(protocol, 0) + 1
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
        prefix = self._prefix_of.get(peer)
        if prefix is not None:
            self._peer_banned_in(prefix, peer)

    def _peer_banned_in(self, prefix: str, peer: str) -> None:
        """Several banned identities from one prefix ban the prefix (SPEC §11.6.5)."""
        now_ms = self._clock.now_ms()
        until_ms = self._prefixes.peer_banned(prefix, peer, now_ms)
        if until_ms is None:
            return
        self.prefix_bans += 1
        if self._gate_prefix is not None:
            interval_s = self._prefixes.policy.banned_handshake_interval_ms / 1000
            self._gate_prefix(prefix, (until_ms - now_ms) / 1000, interval_s)
        log.warning(
            "address prefix %s banned for %.0f s: several of its peer ids were banned",
            prefix,
            (until_ms - now_ms) / 1000,
        )
        for other, other_prefix in list(self._prefix_of.items()):
            if other_prefix != prefix or self._protected(other) or self._vouched(other, now_ms):
                continue
            if not self._table.banned(other, now_ms):  # a banned one is on its way out
                self._disconnect(other)
