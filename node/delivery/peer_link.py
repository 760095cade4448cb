"""Sending DELIVER batches to a peer and checking its signed ACK (SPEC §11).

One deliver stream per peer, reused across batches, one batch in flight per peer (the in-flight
window): the receiver's ack comes back before the next batch goes, so a slow peer slows only
itself. Any failure closes the stream; the next batch opens a new one. A stream over a relay is
not reused once a direct or WebRTC connection to its peer is up: new streams take that one
(SPEC §10.11), and the batches would otherwise stay on the relay for the stream's life.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol, TypeVar

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import DIRECT_PATH, WEBRTC_PATH, P2PHost
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    BatchItem,
    ProtocolErrorFrame,
    decode_frame,
    encode_deliver,
    verify_ack,
)
from hearthmesh.protocol.envelope import sender_device_of
from hearthmesh.protocol.errors import (
    BadSignature,
    HearthError,
    MalformedMessage,
    RemoteProtocolError,
)
from hearthmesh.protocol.identity import DeviceId
from hearthmesh.protocol.inbound import InboundPolicy
from hearthmesh.protocol.peer_id import peer_id_of_node_key

__all__ = [
    "BATCH_BYTES",
    "DeliveryFailed",
    "PeerLinks",
    "SlowHome",
    "addresses_of",
    "build_batch",
]

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S: Final = 5.0
"""Bound on opening a deliver stream over a connection we hold: it takes milliseconds on a
live path, and on a dead one (a partition, a router that lost its state) it would wait out
TCP's retransmission backoff, holding the destination's one batch in flight (SPEC §11.4.2).
Past it, the open is waited on while a connection to the peer answers a ping (§11.5.2): under
load (50 nodes on 2 cores) opens took longer on live connections by the thousand."""

REUSE_MARGIN_S: Final = 15.0
"""Of the receiver's idle timeout, what is left for our next batch's first bytes to reach it:
its idle clock starts once it acked our last batch, after our `_last_used`, so only that
transit (seconds on a loaded machine) can carry a batch past its reset."""

REUSE_IDLE_S: Final = InboundPolicy().idle_timeout_ms / 1000 - REUSE_MARGIN_S
"""A deliver stream idle longer is not reused but replaced: the receiver resets a stream on
which no frame began for its idle timeout (120 s, SPEC §10.4), and a batch written into a
stream being reset would fail and wait for a retry. At 60 s, half the receiver's, a 50-node
sender sending every ~100 s reopened most of its streams (0.56 opens a message per node,
SPEC §20.6) that both ends would have kept."""

REACH_DIAL_TIMEOUT_S: Final = 4.0
"""Bound on one address of a home record answering a dial (SPEC §10.8). An address that does
not answer (a home's LAN address seen from elsewhere) drops the SYN, and libp2p's dial of it
retries for 13-38 s (measured in the netlab); a probe stuck there held back the spare relay's
circuit address, learned meanwhile, as long. With the bound the probe moves on within two SYN
retransmissions, and the one after it (at once, SPEC §11.5.2) dials the new record. An address
that answered is not cut here: its handshakes under load took longer (`DialAnswers`)."""

LET_GO_TIMEOUT_S: Final = 1.0
"""Bound on resetting a failed deliver stream (or closing an idle one). Its frame waits for the
connection's write lock, and on a dead path a write stuck on the full socket (a partition:
gossip, another stream) holds that lock until TCP drains after the heal or gives up. Unbounded,
the failed batch's `DeliveryFailed` waited there: in `simulate --partition` the sender's
destination went down 40-60 s late instead of 15 s, its batches parked late, and messages
reached the other side 27-54 s after the heal (SPEC §11.5.2, §20.4)."""

BATCH_BYTES: Final = 768 * 1024
"""Below the bridge's 1 MiB frame limit with room for certificates and framing."""


class HasWire(Protocol):
    """Anything queued for delivery: an outbox or a relay inbox entry."""

    @property
    def wire(self) -> bytes: ...


W = TypeVar("W", bound=HasWire)
T = TypeVar("T")


def build_batch(
    entries: list[W], recipient: bytes, certificate_of: Callable[[DeviceId], bytes | None]
) -> tuple[list[bytes], list[BatchItem], list[W], list[W]]:
    """Certificates and items for one batch, the entries they carry, and entries left out
    (no certificate known for their device, or past the byte budget: they wait for the next).

    Each entry's stored wire bytes go out as they are: nothing is decoded or encoded again."""
    certificates: list[bytes] = []
    index_of: dict[bytes, int] = {}
    items: list[BatchItem] = []
    carried: list[W] = []
    left: list[W] = []
    size = 0
    for entry in entries:
        cert = certificate_of(sender_device_of(entry.wire))  # no parse: it was verified
        if cert is None or size + len(entry.wire) > BATCH_BYTES:
            left.append(entry)
            continue
        if cert not in index_of:
            index_of[cert] = len(certificates)
            certificates.append(cert)
        items.append(BatchItem(index_of[cert], recipient, entry.wire))
        carried.append(entry)
        size += len(entry.wire)
    return certificates, items, carried, left


def addresses_of(peer_id: str, addresses: tuple[str, ...]) -> list[str]:
    """The addresses of a home record that name `peer_id` (a record lists each home's)."""
    return [address for address in addresses if address.endswith("/p2p/" + peer_id)]


class DeliveryFailed(HearthError):
    """A batch could not be handed to a peer (unreachable, closed, refused, bad ack)."""


class SlowHome(DeliveryFailed):
    """The batch went out on a connection that answered pings, and no ack came within the
    patience: the home is there but too slow for it now (a smaller batch may get through)."""


class _NoPong(TimeoutError):
    """A deliver stream's open or a batch's ack was late, and the connection answered no ping
    either: a dead path."""


async def _let_go(ending: Coroutine[Any, Any, None]) -> None:
    """A stream's reset or close, given up after `LET_GO_TIMEOUT_S`: the peer then learns of
    the stream's end when its connection closes (the caller closes it on a dead path)."""
    try:
        async with asyncio.timeout(LET_GO_TIMEOUT_S):
            await ending
    except TimeoutError:
        log.debug("a deliver stream's end waited past %.0f s: given up", LET_GO_TIMEOUT_S)


class PeerLinks:
    """Deliver streams to peers, opened on demand."""

    def __init__(
        self,
        host: P2PHost,
        *,
        ack_timeout_s: float,
        ack_patience_s: float = 0.0,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        on_ack: Callable[[str], None] = lambda _peer: None,
        on_bad_ack: Callable[[str, RemoteProtocolError], None] = lambda _peer, _error: None,
    ) -> None:
        self._host = host
        self._on_bad_ack = on_bad_ack
        """Charges a peer whose answer to our batch cannot be right (SPEC §11.3, §11.6.1)."""
        self._open_timeout_s = open_timeout_s
        """How long a deliver stream's open over a connection we hold may take before that
        connection must answer a ping to be waited on (`OPEN_TIMEOUT_S`)."""
        self._ack_timeout_s = ack_timeout_s
        """How long a batch may wait for its ack before its connection must show it is alive."""
        self._ack_patience_s = max(ack_patience_s, ack_timeout_s)
        """How long in all a batch may wait for its ack on a connection that stays alive."""
        self.waited_late = 0
        """Opens and acks waited on past their bound because the connection answered a ping."""
        self._on_ack = on_ack
        """Told of each verified ack, by peer (an exchange that went well, SPEC §11.7)."""
        self._streams: dict[str, FrameStream] = {}
        self._last_used: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dead_paths: dict[str, int] = {}
        """Per peer, how many of its batches found the path dead (`_NoPong`): a batch that
        waited for the peer's lock meanwhile fails with it (`deliver`)."""
        self._batch_ids = itertools.count(1)
        self.round_trips_ms: deque[float] = deque(maxlen=1024)
        """Batch written to signed ack verified, most recent last (status and benchmarks)."""

    async def deliver(self, peer_id: str, certificates: list[bytes], items: list[BatchItem]) -> Ack:
        """Send one batch to `peer_id` and return its verified ack.

        Raises:
            DeliveryFailed: no stream, a timeout, an ERROR frame, or an ack that is not from
                `peer_id`, not for this batch, or not one result per item (an answer that
                cannot be right: charged to `peer_id` by `on_bad_ack`, an ERROR frame not).
        """
        lock = self._locks.setdefault(peer_id, asyncio.Lock())
        dead_paths = self._dead_paths.get(peer_id, 0)
        async with lock:
            if self._dead_paths.get(peer_id, 0) != dead_paths:
                # The batch before this one found no answer and no ping answered while this
                # one waited: tried, it would wait out the bound and a ping once more on the
                # peer's next connection, and the batch queued next on the one after (a
                # probe's attempt took 31 s in a `simulate --partition` run, 16 s of it in
                # this queue; SPEC §11.5.2). The caller's own retry (a probe) dials afresh.
                raise DeliveryFailed(f"{peer_id[-8:]}: the path was found dead meanwhile")
            batch_id = next(self._batch_ids)
            stream: FrameStream | None = None
            sent = False
            try:
                stream = await self._stream(peer_id)
                sent = True
                started = time.perf_counter()
                batch = encode_deliver(batch_id, certificates, items)
                alive = functools.partial(self._host.stream_answers, stream)
                answer = stream.write_then_read(batch)
                frame = decode_frame(await self._patiently(answer, self._ack_timeout_s, alive))
                ack = self._check(peer_id, batch_id, len(items), frame)
                self.round_trips_ms.append((time.perf_counter() - started) * 1000)
                self._on_ack(peer_id)
            except (HearthError, OSError, TimeoutError) as exc:
                if isinstance(exc, RemoteProtocolError):  # not an ERROR frame: that is refused
                    self._on_bad_ack(peer_id, exc)
                await self._drop(peer_id)
                if isinstance(exc, TimeoutError):
                    # No answer within the bound and no ping answered either (or none within
                    # the patience): the path is dead, or as good as. The next
                    # attempt takes another connection or dials afresh, so the first one
                    # after the path heals gets through instead of waiting out TCP's backoff
                    # on this connection (SPEC §11.5.2). The stream's connection only: the
                    # peer's others may be fine. A stream that never opened names none: then
                    # every connection but a WebRTC one (no dial replaces it) is closed.
                    if stream is None:
                        self._host.redial_nowait(peer_id)
                    else:
                        unanswered = isinstance(exc, _NoPong)  # pinged already: no second one
                        self._host.drop_connection_nowait(stream, unanswered=unanswered)
                    if isinstance(exc, _NoPong):
                        self._dead_paths[peer_id] = self._dead_paths.get(peer_id, 0) + 1
                if isinstance(exc, DeliveryFailed):
                    raise
                kind = "TimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__
                slow = sent and isinstance(exc, TimeoutError) and not isinstance(exc, _NoPong)
                failed = SlowHome if slow else DeliveryFailed
                raise failed(f"{peer_id[-8:]}: {kind}: {exc}") from exc
            return ack

    async def _patiently(
        self, work: Coroutine[Any, Any, T], bound_s: float, alive: Callable[[], Awaitable[bool]]
    ) -> T:
        """`work` (a deliver stream's open, a batch's ack) within `bound_s`, or later while the
        peer's connection answers a ping (`alive`) each ack bound, up to the patience
        (SPEC §11.5.2). On time, as nearly every batch is, it costs a timer and no task: the
        watch over the connection starts only once the bound has passed.

        Raises:
            TimeoutError: not done within the bound and the connection answered no ping
                (`_NoPong`: a dead path), or not done within the patience.
        """
        loop = asyncio.get_running_loop()
        dead: list[bool] = []
        watch: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(None) as bound:
                late = loop.call_later(
                    bound_s,
                    lambda: watch.append(
                        loop.create_task(self._watch_late(bound_s, alive, bound, dead))
                    ),
                )
                try:
                    return await work
                finally:
                    late.cancel()
                    for task in watch:
                        task.cancel()
        except TimeoutError:
            if dead:
                raise _NoPong("no answer, and no ping answered") from None
            raise

    async def _watch_late(
        self,
        bound_s: float,
        alive: Callable[[], Awaitable[bool]],
        bound: asyncio.Timeout,
        dead: list[bool],
    ) -> None:
        """Ends the wait of `_patiently` (its `bound`) once the late work's connection does not
        answer a ping (noted in `dead`), or the patience is spent; started `bound_s` in.

        Late on a connection that answers is a slow home (a loaded machine), not a gone one.
        Failing the batch there made the destination down: the batch went to a relay as well,
        the home's next batches were parked, then all sent again once it answered, and the
        connection was pinged (and closed when the pong was late too), so the homes dialled and
        greeted again. At 50 nodes on 2 cores that extra work made more opens and acks late,
        until the mesh stalled and p50 to the last member went from 4 s to 100 s (SPEC §20.6)."""
        loop = asyncio.get_running_loop()
        started = loop.time() - bound_s
        waited = False
        while loop.time() - started < self._ack_patience_s:
            try:
                answered = await alive()
            except Exception:  # a watch that cannot tell must not leave the work unbounded
                log.exception("checking a late peer's connection failed")
                answered = False
            if not answered:
                dead.append(True)
                break
            if not waited:
                waited = True
                self.waited_late += 1
                log.debug("late past %.0f s, but the connection answers: waiting on", bound_s)
            left = self._ack_patience_s - (loop.time() - started)
            await asyncio.sleep(max(0.0, min(self._ack_timeout_s, left)))
        bound.reschedule(loop.time())  # never reached once cancelled: the work was done

    async def reach(
        self, peer_id: str, addresses: tuple[str, ...], *, retry_now: bool = False
    ) -> bool:
        """Dial `peer_id` from the addresses a home record gives, unless connected already;
        each address has `REACH_DIAL_TIMEOUT_S` to answer (then its handshakes are given
        longer, `P2PHost.connect`'s `answer_s`).

        `retry_now`: the caller backs off on its own; see `P2PHost.connect`.
        """
        if peer_id in self._host.connected_peers():
            return True
        for address in addresses_of(peer_id, addresses):
            try:
                await self._host.connect(
                    address, retry_now=retry_now, answer_s=REACH_DIAL_TIMEOUT_S
                )
            except (P2PError, TimeoutError) as exc:
                log.debug("dial of %s at %s failed: %r", peer_id[-8:], address, exc)
                continue
            return True
        return False

    def _check(self, peer_id: str, batch_id: int, count: int, frame: object) -> Ack:
        if isinstance(frame, ProtocolErrorFrame):
            raise DeliveryFailed(f"{peer_id[-8:]} refused the batch: {frame.code} {frame.message}")
        if not isinstance(frame, Ack):
            raise MalformedMessage("expected an ACK frame")
        verify_ack(frame)
        if peer_id_of_node_key(frame.node_key) != peer_id:
            raise BadSignature("ack signed by another node")
        if frame.batch_id != batch_id or len(frame.results) != count:
            raise MalformedMessage("ack does not answer this batch")
        return frame

    async def _stream(self, peer_id: str) -> FrameStream:
        stream = self._streams.get(peer_id)
        now = time.monotonic()
        if stream is not None and (
            now - self._last_used.get(peer_id, now) > REUSE_IDLE_S or self._relayed_past(stream)
        ):
            del self._streams[peer_id]
            await _let_go(stream.close())  # never raises: the receiver reads a clean end
            stream = None
        if stream is None or stream.closed:
            # Not connected, libp2p dials the addresses it knows, each for up to 38 s.
            # Lazily (SPEC §10.1): a refusal at the first read fails the batch as at the open.
            opening = self._host.open_stream(peer_id, DELIVER_PROTOCOL, lazy=True)
            if peer_id in self._host.connected_peers():
                alive = functools.partial(self._host.peer_answers, peer_id)
                stream = await self._patiently(opening, self._open_timeout_s, alive)
            else:
                async with asyncio.timeout(REACH_DIAL_TIMEOUT_S):
                    stream = await opening
            self._streams[peer_id] = stream
        self._last_used[peer_id] = now
        return stream

    def _relayed_past(self, stream: FrameStream) -> bool:
        """`stream` runs over a relay while a direct or WebRTC connection to its peer is up."""
        if stream.path in (None, DIRECT_PATH, WEBRTC_PATH):
            return False
        paths = self._host.paths_of(stream.remote_peer)
        return DIRECT_PATH in paths or WEBRTC_PATH in paths

    async def _drop(self, peer_id: str) -> None:
        self._last_used.pop(peer_id, None)
        stream = self._streams.pop(peer_id, None)
        if stream is not None:
            try:
                await _let_go(stream.reset())
            except (HearthError, OSError):
                log.debug("reset of a failed stream to %s failed too", peer_id[-8:])

    async def aclose(self) -> None:
        """Close every stream (the host closes connections after this)."""
        for peer_id in list(self._streams):
            stream = self._streams.pop(peer_id)
            try:
                await stream.close()
            except (HearthError, OSError):
                log.debug("closing the stream to %s failed", peer_id[-8:])
