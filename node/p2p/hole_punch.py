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
  a second (one SYN retransmission) or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from hearthmesh.node.p2p.serving import serving

__all__ = [
    "DIRECT_DIAL_TIMEOUT_S",
    "PUNCH_WINDOW_S",
    "HolePunchCounts",
    "HolePunchLayer",
    "HolePunchReport",
]

log = logging.getLogger(__name__)

DIRECT_DIAL_TIMEOUT_S: Final = 2
"""How long one direct dial of a hole punch (or of the plain upgrade before it) may take."""
PUNCH_WINDOW_S: Final = 3.0
"""How long one hole punch may take before it counts as failed."""


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
    """`DCUtRProtocol` whose punches are bounded in time and counted (module docstring)."""

    def __init__(self, host: IHost, report: HolePunchReport) -> None:
        super().__init__(host, dial_timeout=DIRECT_DIAL_TIMEOUT_S)
        self._report = report

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


class HolePunchLayer:
    """Runs DCUtR for one host and punches each new relayed connection (trio thread only)."""

    def __init__(self, report: HolePunchReport) -> None:
        self._report = report
        self._dcutr: _BoundedDCUtR | None = None
        self._nursery: trio.Nursery | None = None
        self._punching: dict[ID, trio.Event] = {}  # our sessions in progress, set as each ends

    def build(self, host: IHost) -> None:
        """Create the protocol for `host` (its handler is installed by `running`)."""
        self._dcutr = _BoundedDCUtR(host, self._report)

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
        """Start upgrading our relayed connection to `peer` now (both ends do; DCUtR runs
        the two sessions side by side)."""
        if self._nursery is not None and self._dcutr is not None:
            target = ID.from_base58(peer)
            ended = self._punching.setdefault(target, trio.Event())
            self._nursery.start_soon(self._punch, self._dcutr, target, ended)

    async def punch_ended(self, peer: ID) -> None:
        """Return once no punch of ours to `peer` is under way (each is bounded, see above)."""
        ended = self._punching.get(peer)
        if ended is not None:
            await ended.wait()

    async def _punch(self, dcutr: _BoundedDCUtR, peer: ID, ended: trio.Event) -> None:
        try:
            await dcutr.initiate_hole_punch(peer)
        except Exception as exc:  # the relayed connection still carries the chat
            log.debug("hole punch to %s failed: %r", peer, exc)
        finally:
            if self._punching.get(peer) is ended:
                del self._punching[peer]
            ended.set()
