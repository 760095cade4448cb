"""DCUtR for `P2PHost`: upgrade a relayed connection to a direct one by hole punching where the
NATs allow it (SPEC §10.9).

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`); its objects
live on the trio thread. State owned: py-libp2p's `DCUtRProtocol` (the `/libp2p/dcutr` handler,
attempts per peer, sessions in progress); each punch's outcome is reported to asyncio, where
`P2PHost` counts them in a `HolePunchCounts`.

py-libp2p 0.8.1 (`relay/circuit_v2/dcutr.py`) does the protocol: the CONNECT/SYNC exchange over
the relayed connection, addresses predicted as the NAT's public IP with our listen port, and
dials bound to the listen port so that both NATs map them the way the peer expects (TCP
simultaneous open). Timing faults fixed here:
- a new relayed connection waited up to 2 s for the service's poll before a punch began: we
  start one as soon as the connection opens;
- before punching it dials the peer's advertised addresses directly, for `dial_timeout` (10 s
  by default), although behind a NAT they fail at once (the swarm retries them with backoff
  until the timeout): we pass `DIRECT_DIAL_TIMEOUT_S`;
- a punch that cannot work (a NAT that maps each connection to a random port) goes on for three
  rounds of 5 s + 2 s: we bound it by `PUNCH_WINDOW_S`; simultaneous open either meets within
  a second (one SYN retransmission) or not at all;
- both ends started a session at once, and py-libp2p's loop (`_auto_drive_loop`) started more
  every 2 s from both ends until 3 per peer were spent: all within ~15 s of the connection
  opening, never again while it stayed open. Two sessions side by side dial the same address
  pair from the same port: one dial fails (EADDRNOTAVAIL), and the two that remain may be of
  different sessions, whose roles (which end upgrades as responder) clash; on a loaded machine
  (the relay's round trip, which times the dials, measured at 10 s at load 50) all three could
  miss, leaving the pair relayed for the connection's life. Here one end drives (the lower
  peer id, as for WebRTC, SPEC §10.11), one session at a time, and punches again on a
  schedule (`PUNCH_RETRY_AFTER_S`) while the peer is reached through relays alone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from hearthmesh.node.p2p.circuit_relay import is_relayed
from hearthmesh.node.p2p.serving import serving

__all__ = [
    "DIRECT_DIAL_TIMEOUT_S",
    "PUNCH_RETRY_AFTER_S",
    "PUNCH_WINDOW_S",
    "UNILATERAL_DIAL_S",
    "HolePunchCounts",
    "HolePunchLayer",
    "HolePunchReport",
    "punch_until_direct",
]

log = logging.getLogger(__name__)

DIRECT_DIAL_TIMEOUT_S: Final = 2
"""How long one direct dial of a hole punch (or of the plain upgrade before it) may take."""
UNILATERAL_DIAL_S: Final = DIRECT_DIAL_TIMEOUT_S
"""How long the plain upgrade before a punch (a direct dial of the peer's addresses) may take
by default (`HostConfig.unilateral_dial_s`). Behind NATs its dials go unanswered, so each
punch waits it out: the NAT lab's nodes shorten it."""
PUNCH_WINDOW_S: Final = 3.0
"""How long one hole punch may take before it counts as failed."""
PUNCH_RETRY_AFTER_S: Final = (2.0, 6.0, 18.0, 54.0)
"""A punch that failed is made again this long after the previous one ended, while the peer is
reached through relays alone (SPEC §10.9): two dials that missed each other on a loaded
machine, or a NAT mapping that was not ready, must not leave the pair relayed (or on WebRTC,
which costs more CPU per byte) for the connection's life. The first soon (a miss is mostly
timing), then backed off; 5 punches in all, over about a minute and a half."""


HolePunchReport = Callable[[str, bool], None]
"""Told (on the trio thread) each punch's transport (`"tcp"`, `"quic"`) and whether it went
direct."""


@dataclass
class HolePunchCounts:
    """Hole punches per transport (`"tcp"`, `"quic"`): tried, and those that went direct."""

    tried: dict[str, int] = field(default_factory=dict)
    direct: dict[str, int] = field(default_factory=dict)

    def record(self, transport: str, went_direct: bool) -> None:
        self.tried[transport] = self.tried.get(transport, 0) + 1
        if went_direct:
            self.direct[transport] = self.direct.get(transport, 0) + 1


def _transport_of(addrs: list[Multiaddr]) -> str:
    return "quic" if any("/quic" in str(a) for a in addrs) else "tcp"


class _BoundedDCUtR(DCUtRProtocol):
    """`DCUtRProtocol` whose punches are bounded in time and counted, and started by
    `HolePunchLayer` alone (module docstring)."""

    def __init__(self, host: IHost, report: HolePunchReport, unilateral_dial_s: float) -> None:
        super().__init__(host, dial_timeout=DIRECT_DIAL_TIMEOUT_S)
        self._report = report
        self._unilateral_dial_s = unilateral_dial_s

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        """py-libp2p's plain upgrade, bounded by `unilateral_dial_s` (its own bound is the
        punch dials' `dial_timeout`)."""
        with trio.move_on_after(self._unilateral_dial_s):
            return await super()._try_unilateral_upgrade(peer_id)
        return await self._verify_direct_connection(peer_id)

    async def _auto_drive_loop(self) -> None:
        """Not run: `HolePunchLayer` starts the punches (module docstring)."""

    async def punch(self, peer: ID) -> bool:
        """One punch to `peer` (a unilateral dial, then one DCUtR session); True if a direct
        connection to it is there after."""
        self._hole_punch_attempts.pop(peer, None)  # `PUNCH_RETRY_AFTER_S` bounds them instead
        return await self.initiate_hole_punch(peer)

    async def relayed_only(self, peer: ID) -> bool:
        """True while `peer` is reached through a relay and by no direct connection (a WebRTC
        one does not count: direct is cheaper, and closes it, SPEC §10.11)."""
        connections = self.host.get_network().get_connections(peer)
        if not any(is_relayed(conn) for conn in connections):
            return False
        return not await self._verify_direct_connection(peer)

    async def _perform_hole_punch(
        self, peer_id: ID, addrs: list[Multiaddr], as_responder: bool = False
    ) -> bool:
        went_direct = False
        with trio.move_on_after(PUNCH_WINDOW_S):
            went_direct = await super()._perform_hole_punch(peer_id, addrs, as_responder)
        went_direct = went_direct or await self._verify_direct_connection(peer_id)
        self._report(_transport_of(addrs), went_direct)
        log.info("hole punch to %s: %s", peer_id, "direct" if went_direct else "failed")
        return went_direct


async def punch_until_direct(
    punch: Callable[[], Awaitable[bool]],
    relayed_only: Callable[[], Awaitable[bool]],
    retry_after_s: Sequence[float] = PUNCH_RETRY_AFTER_S,
) -> None:
    """Punch now, and again after each pause of `retry_after_s` once the previous punch failed,
    while `relayed_only()` holds (a direct connection came, or the relayed one went: stop)."""
    for pause in (0.0, *retry_after_s):
        await trio.sleep(pause)
        if not await relayed_only():
            return
        if await punch():
            return


class HolePunchLayer:
    """Runs DCUtR for one host and upgrades each relayed connection whose peer has a higher
    peer id than ours (the peer drives the others), one punch at a time (trio thread only)."""

    def __init__(
        self,
        report: HolePunchReport,
        retry_after_s: Sequence[float] = PUNCH_RETRY_AFTER_S,
        unilateral_dial_s: float = UNILATERAL_DIAL_S,
    ) -> None:
        self._report = report
        self._retry_after_s = tuple(retry_after_s)
        self._unilateral_dial_s = unilateral_dial_s
        self._dcutr: _BoundedDCUtR | None = None
        self._nursery: trio.Nursery | None = None
        self._driving: set[ID] = set()  # peers with a schedule of punches under way
        self._punching: dict[ID, trio.Event] = {}  # our punches in progress, set as each ends

    def build(self, host: IHost) -> None:
        """Create the protocol for `host` (its handler is installed by `running`)."""
        self._dcutr = _BoundedDCUtR(host, self._report, self._unilateral_dial_s)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve `/libp2p/dcutr` and punch relayed connections for the lifetime of the block."""
        if self._dcutr is None:
            raise RuntimeError("build() first")
        async with serving(self._dcutr) as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None

    def relayed_connection_opened(self, peer: str) -> None:
        """Start upgrading our relayed connection to `peer` now if this end drives (SPEC
        §10.9): the end with the lower peer id, as for WebRTC; the other answers its sessions."""
        dcutr = self._dcutr
        if self._nursery is None or dcutr is None or dcutr.host.get_id().to_base58() > peer:
            return
        target = ID.from_base58(peer)
        if target not in self._driving:  # one schedule per peer, over however many relays
            self._driving.add(target)
            self._nursery.start_soon(self._drive, dcutr, target)

    async def punch_ended(self, peer: ID) -> None:
        """Return once no punch of ours to `peer` is under way (each is bounded, see above)."""
        ended = self._punching.get(peer)
        if ended is not None:
            await ended.wait()

    async def _drive(self, dcutr: _BoundedDCUtR, peer: ID) -> None:
        try:
            await punch_until_direct(
                lambda: self._punch(dcutr, peer),
                lambda: dcutr.relayed_only(peer),
                self._retry_after_s,
            )
        finally:
            self._driving.discard(peer)

    async def _punch(self, dcutr: _BoundedDCUtR, peer: ID) -> bool:
        ended = self._punching.setdefault(peer, trio.Event())
        try:
            return await dcutr.punch(peer)
        except Exception as exc:  # the relayed connection still carries the chat
            log.debug("hole punch to %s failed: %r", peer, exc)
            return False
        finally:
            if self._punching.get(peer) is ended:
                del self._punching[peer]
            ended.set()
