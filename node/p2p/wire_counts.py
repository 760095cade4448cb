"""What a host wrote to its peers, per protocol (SPEC §20.6).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). A scale
run's TCP counters (`tools/simulate/cost.py`) say how many bytes a node sent, not what for; to
find what grows with the mesh, last session's per-protocol counts came from a hook kept out of
the tree. These counts are that hook, kept: every write to a libp2p stream adds its payload
bytes (before yamux's and noise's framing) to the stream's negotiated protocol, or to
`NEGOTIATION` while multistream is still agreeing on one; and each stream this host opened
counts once under the protocol agreed on it (`opens`): negotiation writes say that streams are
opened, not for what.

py-libp2p 0.8.1's `NetStream.write` and `set_protocol` are wrapped once per process
(`install`), and each write (each protocol agreed on a stream we initiated) counts into the
`WireCounts` of the swarm its stream belongs to (`track`): one per host, so hosts sharing a
process (tests) count apart. A write that raises is not counted.

State: per tracked swarm, its `WireCounts` (a weak reference: a host gone is forgotten); each
host's counts are added to on its own trio thread only and copied whole for a reader.

The connection census (`connections`, SPEC §20.6): each connection counted in once under who
dialled it (`outbound`: we did), and under the protocol of the first stream the dialling end
opened on it, gossip's standing streams, identify and ping aside: what the dial was for
(`outbound /ipfs/kad/1.0.0`). First by opening, not by agreeing: a stream py-libp2p opens
agrees on its protocol a round trip later, a lazy one of ours at once, so the hello opened as
a connection is announced was agreed before the kad request that dialled it. The dialler's
first few streams are kept in the order they opened (`stream_opened`, told by the host's
notifee) until the earliest that names a cause has agreed. One whose dialler opened no such
stream counts under its direction alone, so `outbound` less its protocols is the dials made
for nothing else (a `connect`, a bootstrap). Weak maps of the connections waiting and named
keep each to one count.
"""

from __future__ import annotations

import threading
import weakref
from typing import Final

from libp2p.abc import INetStream, INetwork
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import NetStream

__all__ = ["NEGOTIATION", "NOT_A_CAUSE", "WireCounts", "install", "stream_opened", "track"]

NEGOTIATION: Final = "negotiation"
"""The key of writes made before the stream's protocol was agreed (multistream's own)."""
NOT_A_CAUSE: Final = ("/meshsub/", "/floodsub/", "/ipfs/id/", "/ipfs/ping/")
"""Streams opened on every connection whatever it was dialled for: not named by the census."""


class WireCounts:
    """Writes and payload bytes per protocol since the start (one host)."""

    def __init__(self) -> None:
        self._writes: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._opens: dict[str, int] = {}
        self._connections: dict[str, int] = {}

    def add(self, protocol: str, size: int) -> None:
        """One write of `size` bytes on a stream of `protocol` (the host's trio thread)."""
        self._writes[protocol] = self._writes.get(protocol, 0) + 1
        self._bytes[protocol] = self._bytes.get(protocol, 0) + size

    def opened(self, protocol: str) -> None:
        """One stream we initiated agreed on `protocol` (the host's trio thread)."""
        self._opens[protocol] = self._opens.get(protocol, 0) + 1

    def connected(self, outbound: bool) -> None:
        """One connection counted in (the host's trio thread)."""
        key = _direction(outbound)
        self._connections[key] = self._connections.get(key, 0) + 1

    def dialled_for(self, outbound: bool, protocol: str) -> None:
        """The first stream the dialler of a connection opened agreed on `protocol`."""
        key = f"{_direction(outbound)} {protocol}"
        self._connections[key] = self._connections.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """`{"bytes": {protocol: n}, "writes": {protocol: n}, "opens": {protocol: n}}`, from
        any thread: `dict()` of a dict copies it while holding the GIL, so a key the trio
        thread adds meanwhile is either in the copy or not, never half there."""
        return {
            "bytes": dict(self._bytes),
            "writes": dict(self._writes),
            "opens": dict(self._opens),
            "connections": dict(self._connections),
        }


def _direction(outbound: bool) -> str:
    return "outbound" if outbound else "inbound"


_tracked: weakref.WeakKeyDictionary[INetwork, WireCounts] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # hosts of one process (tests) start on several trio threads
_original_write = NetStream.write
_original_set_protocol = NetStream.set_protocol
_named: weakref.WeakSet[object] = weakref.WeakSet()
"""Connections the census has named the cause of (`dialled_for`)."""
_EARLY_STREAMS: Final = 6
_early: weakref.WeakKeyDictionary[object, list[NetStream]] = weakref.WeakKeyDictionary()
"""Per connection not yet named, its dialler's first streams in the order they opened."""


def _counts_of(stream: NetStream) -> WireCounts | None:
    """The counts of the host `stream` belongs to, None if that host is not tracked."""
    swarm_conn = stream.swarm_conn
    return None if swarm_conn is None else _tracked.get(swarm_conn.swarm)


async def _counted_write(self: NetStream, data: bytes) -> None:
    await _original_write(self, data)
    counts = _counts_of(self)
    if counts is not None:
        counts.add(str(self.protocol_id) if self.protocol_id else NEGOTIATION, len(data))


def _counted_set_protocol(self: NetStream, protocol_id: TProtocol) -> None:
    _original_set_protocol(self, protocol_id)
    counts = _counts_of(self)
    # Both ends agree on the protocol; the stream counts at the end that opened it.
    if counts is None:
        return
    if getattr(self.muxed_stream, "is_initiator", False):
        counts.opened(str(protocol_id))
    conn = self.swarm_conn
    if conn is not None and conn in _early:
        _name(conn, counts)


def stream_opened(stream: INetStream) -> None:
    """A stream added to one of a tracked host's connections (the host's notifee, called in
    the order streams open): kept for the census if the connection's dialler opened it."""
    conn = getattr(stream, "swarm_conn", None)
    if not isinstance(stream, NetStream) or conn is None or conn in _named:
        return
    initiator = bool(getattr(stream.muxed_stream, "is_initiator", False))
    if initiator == _outbound(conn):
        early = _early.setdefault(conn, [])
        if len(early) < _EARLY_STREAMS:
            early.append(stream)


def _name(conn: object, counts: WireCounts) -> None:
    """Name `conn` by its dialler's earliest stream that names a cause, once every stream
    opened before it has agreed on a protocol (one that never agrees leaves it unnamed)."""
    for stream in _early[conn]:
        if stream.protocol_id is None:
            return
        protocol = str(stream.protocol_id)
        if not protocol.startswith(NOT_A_CAUSE):
            del _early[conn]
            _named.add(conn)
            counts.dialled_for(_outbound(conn), protocol)
            return


def _outbound(conn: object) -> bool:
    return bool(getattr(getattr(conn, "muxed_conn", None), "is_initiator", False))


def install() -> None:
    """Count every stream write and opened stream of every tracked host in this process
    (idempotent)."""
    NetStream.write = _counted_write  # type: ignore[method-assign]
    NetStream.set_protocol = _counted_set_protocol  # type: ignore[method-assign]


def track(network: INetwork, counts: WireCounts) -> None:
    """Count the writes of `network`'s streams into `counts` (its host's trio thread)."""
    install()
    with _lock:
        _tracked[network] = counts
