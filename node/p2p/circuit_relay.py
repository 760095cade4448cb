"""Circuit relay v2 for `P2PHost`: every node a relay (the hop service, within limits), and a
private node reachable through reservations on relays (SPEC §10.7).

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`); its objects
live on the trio thread. State owned: py-libp2p's `CircuitV2Protocol` (hop and stop handlers,
the relay's reservations and circuits) and `CircuitV2Transport` (our reservations), and the
`/p2p-circuit` addresses our reservations give us, reported to asyncio when they change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.abc import IHost, INetConn
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.transport.quic.connection import QUICConnection

from hearthmesh.node.p2p.relay_limits import RelayServiceLimits
from hearthmesh.node.p2p.serving import serving

__all__ = [
    "HOP_PROTOCOL",
    "CircuitRelayLayer",
    "RelayedAddrsReport",
    "is_relayed",
]

log = logging.getLogger(__name__)

HOP_PROTOCOL: Final = str(HOP_PROTOCOL_ID)
RESERVE_TIMEOUT_S: Final = 10.0
IDENTIFY_WAIT_S: Final = 10.0
"""How long a pass waits for connected candidates' identify (a stranger that never answers
identify holds a pass no longer than this)."""
IDENTIFY_POLL_S: Final = 0.2


RelayedAddrsReport = Callable[[dict[str, str]], None]
"""Told (on the trio thread) relay peer id -> our `/p2p-circuit` address through it, each time
they change."""


def is_relayed(conn: INetConn) -> bool:
    """True if `conn` runs through a relay (its transport addresses name a circuit)."""
    return relay_of(conn) is not None


def relay_of(conn: INetConn) -> str | None:
    """The relay's peer id if `conn` is a relayed connection, else None.

    Upstream fault (py-libp2p 0.8.1, circuit_v2/protocol.py `handle_incoming_connection`): an
    inbound circuit is tagged `/p2p/<our own id>/p2p-circuit/...`, naming us as the relay; the
    relay is the peer at the other end of the stop stream the circuit runs on, so we ask it.
    """
    named = _named_relay(conn)
    if named is None:
        return None
    own = _own_peer(conn)
    if named == own or not named:
        carrier = _carrier_peer(conn)
        return carrier if carrier is not None else named
    return named


def _own_peer(conn: INetConn) -> str | None:
    local = getattr(getattr(conn, "muxed_conn", None), "secured_conn", None)
    peer = getattr(local, "local_peer", None)
    return peer.to_base58() if peer is not None else None


def _carrier_peer(conn: INetConn) -> str | None:
    """The peer at the other end of the stream a circuit connection runs on."""
    layer: object = getattr(conn, "muxed_conn", None)
    for _ in range(6):  # muxed -> secured -> raw circuit connection -> its stream
        stream = getattr(layer, "stream", None)
        if stream is not None:
            peer = getattr(getattr(stream, "muxed_conn", None), "peer_id", None)
            return peer.to_base58() if peer is not None else None
        layer = getattr(layer, "secured_conn", None) or getattr(layer, "conn", None)
    return None


def _named_relay(conn: INetConn) -> str | None:
    """The relay named in `conn`'s transport addresses ("" if unnamed), None if direct."""
    get_addrs = getattr(conn, "get_transport_addresses", None)
    if not callable(get_addrs):
        get_addrs = getattr(getattr(conn, "muxed_conn", None), "get_transport_addresses", None)
    addrs: list[object] = list(get_addrs()) if callable(get_addrs) else []
    for addr in addrs:
        text = str(addr)
        if "/p2p-circuit" in text:
            before = text.split("/p2p-circuit")[0]
            return before.rsplit("/p2p/", 1)[-1] if "/p2p/" in before else ""
    return None


class CircuitRelayLayer:
    """Hop service, relayed dialling and our reservations for one host (trio thread only)."""

    def __init__(
        self,
        *,
        hop: bool,
        limits: RelayServiceLimits,
        report: RelayedAddrsReport,
    ) -> None:
        self._hop = hop
        self._limits = RelayLimits(
            duration=limits.circuit_seconds,
            data=limits.circuit_bytes,
            max_circuit_conns=limits.max_circuits_per_reservation,
            max_reservations=limits.max_reservations,
            reservation_ttl=limits.reservation_ttl_seconds,
        )
        self._report = report
        self._host: IHost | None = None
        self._protocol: CircuitV2Protocol | None = None
        self._transport: CircuitV2Transport | None = None
        self._nursery: trio.Nursery | None = None
        self.relayed_addrs: dict[str, str] = {}
        """Relay peer id -> our `/p2p-circuit` address through it."""

    def build(self, host: IHost) -> None:
        """Create the protocol and register the circuit transport with `host`'s swarm."""
        roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if self._hop else RelayRole(0))
        config = RelayConfig(roles=roles, limits=self._limits)
        self._protocol = CircuitV2Protocol(host, limits=self._limits, allow_hop=self._hop)
        self._transport = CircuitV2Transport(host, self._protocol, config)
        host.get_network().transport_manager.add_transport(self._transport)  # type: ignore[attr-defined]
        self._host = host

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve hop (if on) and stop for the lifetime of the block."""
        if self._protocol is None:
            raise RuntimeError("build() first")
        async with serving(self._protocol) as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None

    async def reserve(self, candidates: list[str], wanted: int) -> list[str]:
        """Reserve on relays from `candidates` (in order, connected directly, serving hop)
        until we hold `wanted`; returns the relay peer ids we hold reservations on.

        A candidate whose identify has not finished (its protocols unknown) is tried after the
        others, once identify tells (within `IDENTIFY_WAIT_S`): identify signals no end, and
        skipped, a relay that connected just before the pass was never reserved on."""
        host = self._host
        if host is None or self._transport is None or self._nursery is None:
            return []
        pending = []
        for candidate in candidates:
            if len(self.relayed_addrs) >= wanted:
                break
            if candidate not in self.relayed_addrs:
                if _protocols(host, ID.from_base58(candidate)):
                    await self._reserve_on(candidate)
                else:
                    pending.append(candidate)
        if pending and len(self.relayed_addrs) < wanted:
            peers = [ID.from_base58(p) for p in pending]
            with trio.move_on_after(IDENTIFY_WAIT_S):
                while not all(_protocols(host, p) for p in peers):  # noqa: ASYNC110
                    await trio.sleep(IDENTIFY_POLL_S)
            for candidate in pending:
                if len(self.relayed_addrs) >= wanted:
                    break
                await self._reserve_on(candidate)
        return list(self.relayed_addrs)

    async def _reserve_on(self, candidate: str) -> None:
        """Reserve on `candidate` if it is connected directly and serves hop; a relay that
        cannot serve us is logged and left (the caller tries the next)."""
        host, transport, nursery = self._host, self._transport, self._nursery
        if host is None or transport is None or nursery is None:
            return
        relay = ID.from_base58(candidate)
        relay_addr = _direct_addr(host, relay)
        if relay_addr is None or HOP_PROTOCOL not in _protocols(host, relay):
            return
        try:
            with trio.fail_after(RESERVE_TIMEOUT_S):
                stream = await host.new_stream(relay, [HOP_PROTOCOL_ID])
                try:
                    reserved = await transport.reserve(stream, relay, nursery)
                finally:
                    await stream.close()
        except Exception as exc:  # a relay that cannot serve us: try the next
            log.debug("reservation on %s failed: %r", candidate, exc)
            return
        if reserved:
            me = host.get_id().to_base58()
            self.relayed_addrs[candidate] = f"{relay_addr}/p2p/{candidate}/p2p-circuit/p2p/{me}"
            self._report(self.relayed_addrs)

    def forget(self, relay: str) -> None:
        """The connection to `relay` closed: its circuit address no longer reaches us."""
        if self.relayed_addrs.pop(relay, None) is not None:
            self._report(self.relayed_addrs)

    async def dial(self, address: str) -> None:
        """Connect to a peer through the relay `address` names (`.../p2p-circuit/p2p/<id>`)."""
        if self._transport is None or self._host is None:
            raise RuntimeError("build() first")
        target = multiaddr.Multiaddr(address)
        if ID.from_base58(target.get_peer_id()) in self._host.get_connected_peers():
            return
        await self._transport.dial(target)


def _protocols(host: IHost, peer: ID) -> list[str]:
    try:
        return list(host.get_peerstore().get_protocols(peer))
    except Exception:  # identify has not finished
        return []


def _direct_addr(host: IHost, peer: ID) -> str | None:
    """An address `peer` listens on, in the transport and IP of our direct connection to it
    (None if only relayed or none, or it dialled us and told no such address).

    The far end of a connection the peer dialled is its ephemeral port, which nothing listens
    on: a circuit address through it reached no one (SPEC §10.7), and a peer that dialled it
    with its others failed to connect at all (50 nodes on loopback, SPEC §20.6)."""
    for conn in host.get_network().get_connections(peer):
        if is_relayed(conn):
            continue
        remote = _remote_addr(conn)
        if remote is None:
            continue
        if getattr(conn, "direction", None) is Direction.OUTBOUND:  # we dialled it there
            return remote
        listened = _listened_like(host, peer, remote)
        if listened is not None:
            return listened
    return None


def _listened_like(host: IHost, peer: ID, remote: str) -> str | None:
    """A known address of `peer` (identify's listen addresses are among them) on the IP and
    transport of `remote`, other than `remote` itself."""
    shape = _DIRECT.fullmatch(remote)
    try:
        known = host.get_peerstore().addrs(peer)
    except Exception:  # not in the peerstore: nothing known
        return None
    if shape is None:
        return None
    for addr in known:
        text = str(addr).split("/p2p/", 1)[0]
        match = _DIRECT.fullmatch(text)
        if text == remote or match is None:
            continue
        if match["where"] == shape["where"] and match["quic"] == shape["quic"]:
            return text
    return None


_DIRECT: Final = re.compile(r"(?P<where>/ip[46]/[^/]+/(tcp|udp))/\d+(?P<quic>/quic-v1)?")
"""A direct address, `/ip4/<ip>/tcp/<port>` or `.../udp/<port>/quic-v1`, split at its port."""


def _remote_addr(conn: INetConn) -> str | None:
    """The peer's address on `conn`, in the connection's own transport: a relay reached over
    QUIC is dialled over QUIC (a `/tcp/` address with its UDP port reached nothing)."""
    try:
        ip, port = conn.muxed_conn.get_remote_address()  # type: ignore[attr-defined]
    except Exception:
        return None
    kind = "ip6" if ":" in str(ip) else "ip4"
    if isinstance(conn.muxed_conn, QUICConnection):
        return f"/{kind}/{ip}/udp/{port}/quic-v1"
    return f"/{kind}/{ip}/tcp/{port}"
