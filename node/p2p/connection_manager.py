"""A host's connections kept bounded: duplicates closed, idle ones trimmed over a high
watermark (SPEC §10.17).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). At 50
nodes a node held ~58 connections, most of them opened by the DHT's first walks and by both
ends dialling at once, and nothing closed an idle one (SPEC §20.6). Every `tick_s` this takes
a snapshot of the swarm's connections (when each opened and was last used, its streams
beyond gossip's standing ones) and closes what `connection_trim.to_close` names; the peers
it protects are the host's to say (`protected`, read on the trio thread). A connection closed
here is redialled by whoever next opens a stream to its peer, as after any close.

State (trio thread): when each connection opened and last carried a stream opening or
closing (weak: a connection gone is forgotten), and the closes under way.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.network.swarm import Swarm
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from hearthmesh.node.clock import Clock
from hearthmesh.node.p2p.circuit_relay import is_relayed
from hearthmesh.node.p2p.connection_trim import ConnectionView, TrimPolicy, to_close

__all__ = ["STANDING_PREFIXES", "ConnectionManager", "dial_no_peerstore"]

log = logging.getLogger(__name__)

STANDING_PREFIXES: Final = ("/meshsub/", "/floodsub/")
"""Gossip's streams stay open for as long as the connection (one each way); a connection
carrying only them is idle. Closing one, gossip greets the peer again on another
(`pubsub_hello`)."""


class ConnectionManager(INotifee):
    """Registered as a notifee of the swarm (opens and uses), run by `running()`."""

    def __init__(
        self,
        network: INetwork,
        *,
        own_peer: str,
        policy: TrimPolicy,
        protected: Callable[[frozenset[str]], frozenset[str]],
        close: Callable[[INetConn, str], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._network = network
        self._own_peer = own_peer
        self._policy = policy
        self._protected = protected
        self._close = close
        self._clock = clock
        self._opened: weakref.WeakKeyDictionary[INetConn, float] = weakref.WeakKeyDictionary()
        self._used: weakref.WeakKeyDictionary[INetConn, float] = weakref.WeakKeyDictionary()
        self._closing: weakref.WeakSet[INetConn] = weakref.WeakSet()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run, nursery)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _run(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(self._policy.tick_s)
            self.pass_once(nursery)

    def pass_once(self, nursery: trio.Nursery) -> None:
        """Look the connections over once; start the closes they call for in `nursery`."""
        now = self._now()
        conns = {id(c): c for c in self._network.get_connections() if not c.is_closed}
        conns = {key: c for key, c in conns.items() if c not in self._closing}
        views = [self._view(key, conn, now) for key, conn in conns.items()]
        connected = frozenset(view.peer for view in views)
        verdict = to_close(
            views,
            own_peer=self._own_peer,
            protected=self._protected(connected),
            now_s=now,
            policy=self._policy,
        )
        for view, reason in verdict:
            conn = conns[view.key]
            self._closing.add(conn)
            log.debug("closing a connection to %s: %s", view.peer[-8:], reason)
            nursery.start_soon(self._close, conn, reason)

    def _view(self, key: int, conn: INetConn, now: float) -> ConnectionView:
        opened = self._opened.setdefault(conn, now)  # listed before it was announced
        return ConnectionView(
            key=key,
            peer=conn.muxed_conn.peer_id.to_base58(),
            outbound=bool(getattr(conn.muxed_conn, "is_initiator", False)),
            opened_s=opened,
            used_s=self._used.get(conn, opened),
            busy=sum(1 for stream in conn.get_streams() if not _standing(stream)),
            relayed=is_relayed(conn),
        )

    def _now(self) -> float:
        return self._clock.now_ms() / 1000

    def _touch(self, stream: INetStream) -> None:
        conn = getattr(stream, "swarm_conn", None)
        if conn is not None:
            self._used[conn] = self._now()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        self._touch(stream)

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        self._touch(stream)

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._opened.setdefault(conn, self._now())

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


def dial_no_peerstore(swarm: Swarm) -> None:
    """Keep py-libp2p's auto-connector from dialling (before the swarm runs).

    It dials peerstore peers we are not connected to whenever the connections are below a
    target, at start, every 30 s and at each disconnect. The target is the midpoint of the low
    and high watermarks: the host set the low one to 0 to turn it off, but the high one stayed
    at its 300, so the target was 150, and every node dialled every peer it had an address of.
    At 50 nodes that was the ~58 connections a node (SPEC §20.6): 1,016 of 1,225 pairs within
    20 s, before any group formed, both ends of a pair often at once (the duplicates), and
    each connection this manager closed as idle was dialled again at the next disconnect. The
    app picks its peers: the ones it sends to, gossip's and the DHT's."""

    async def connect_none() -> None:
        return None

    swarm.auto_connector.maybe_connect = connect_none  # type: ignore[method-assign]


def _standing(stream: INetStream) -> bool:
    protocol = stream.get_protocol()
    return protocol is not None and str(protocol).startswith(STANDING_PREFIXES)
