"""Hello between two connected nodes: swap home records, and let a device learn its clock offset.

The connecting side asks; the other answers with its own records and its estimate of the
asker's clock offset. A linked device that hears from its own user's home corrects its clock
by that offset (SPEC §24), so a device whose clock is minutes off still stamps times that every
other node accepts and orders alike.

Each side also tells its capability levels (`/hearthmesh/hello/1`, SPEC §13.3, §20.7): the
levels in a peer's hello or answer on a connection replace what it told before, so no caps
stream is opened to it; an ask meanwhile waits for this hello (`PeerLevels`). A peer greeted on
hello/0 either way (an older release) has what it told before dropped and is asked on
`/hearthmesh/caps/0` before a send that depends on it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hearthmesh.node.clock import CorrectedClock
from hearthmesh.node.mesh.capabilities import PeerLevels
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.errors import ProtocolNotSpoken, StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.errors import HearthError, RemoteProtocolError, store_failed
from hearthmesh.protocol.hello import (
    HELLO_LEVELS_PROTOCOL,
    HELLO_PROTOCOL,
    Hello,
    decode_hello,
    encode_hello,
)
from hearthmesh.protocol.hlc import estimate_offset

__all__ = ["HelloService"]

log = logging.getLogger(__name__)


class HelloService:
    """Both sides of `/hearthmesh/hello/1` and `/hearthmesh/hello/0`."""

    def __init__(
        self,
        *,
        host: P2PHost,
        clock: CorrectedClock,
        home_record: Callable[[], bytes],
        learn: Callable[[bytes], Awaitable[None]],
        takes_time_from: Callable[[str], bool],
        standing: PeerStanding,
        levels: frozenset[Level],
        peer_levels: PeerLevels,
    ) -> None:
        """`levels` are ours (those withheld left out); `peer_levels` keeps what a peer's hello
        told, or that it told nothing (hello/0), or that ours failed."""
        self._host = host
        self._clock = clock
        self._home_record = home_record
        self._learn = learn
        self._takes_time_from = takes_time_from
        self._standing = standing
        self._levels = levels
        self._peer_levels = peer_levels

    async def hello(self, peer_id: str) -> None:
        """Ask `peer_id`; adopt its records and levels, and its view of our clock if it is our
        home. hello/1 first; on `na` (an older peer), hello/0."""
        try:
            try:
                answer = await self._ask(peer_id, with_levels=True)
            except ProtocolNotSpoken:
                answer = await self._ask(peer_id, with_levels=False)
        except HearthError:
            self._peer_levels.hello_failed(peer_id)  # an ask waiting for it asks instead
            raise
        self._told(peer_id, answer.levels)
        asked_on = HELLO_PROTOCOL if answer.levels is None else HELLO_LEVELS_PROTOCOL
        await self._take_records(peer_id, answer, asked_on)
        if answer.offset_ms is not None and self._takes_time_from(peer_id):
            if answer.offset_ms != 0:
                log.info(
                    "clock corrected by %+d ms, as our home %s sees it",
                    answer.offset_ms,
                    peer_id[-8:],
                )
            self._clock.correct(answer.offset_ms)

    async def _ask(self, peer_id: str, *, with_levels: bool) -> Hello:
        protocol = HELLO_LEVELS_PROTOCOL if with_levels else HELLO_PROTOCOL
        async with await self._host.open_stream(peer_id, protocol) as stream:
            ours = Hello(
                records=(self._home_record(),),
                sent_ms=self._clock.now_ms(),
                levels=self._levels if with_levels else None,
            )
            await stream.write_frame(encode_hello(ours))
            try:
                return decode_hello(await stream.read_frame(), with_levels=with_levels)
            except RemoteProtocolError as exc:
                self._standing.refused(peer_id, exc, protocol=protocol)
                raise

    async def serve(self, stream: FrameStream) -> None:
        """Answer one hello on hello/0."""
        await self._answer(stream, with_levels=False)

    async def serve_with_levels(self, stream: FrameStream) -> None:
        """Answer one hello on hello/1, and keep the asker's levels as an answer's are."""
        await self._answer(stream, with_levels=True)

    async def _answer(self, stream: FrameStream, *, with_levels: bool) -> None:
        try:
            asked = decode_hello(await stream.read_frame(), with_levels=with_levels)
        except StreamClosed:
            return
        except RemoteProtocolError as exc:  # hello has no error frame: the stream just ends
            self._standing.refused(stream.remote_peer, exc, protocol=stream.protocol_id)
            log.debug("hello from %s refused: %s", stream.remote_peer[-8:], exc)
            return
        received_ms = self._clock.now_ms()
        offset = estimate_offset(
            event_ms=asked.sent_ms, send_ms=asked.sent_ms, receive_ms=received_ms
        )
        # The asker's records and levels are taken before we answer, so an asker holding the
        # answer may act on our holding its record at once (SPEC §13.3): a verification it
        # starts, a delivery it expects us to route to it.
        self._told(stream.remote_peer, asked.levels)
        await self._take_records(stream.remote_peer, asked, stream.protocol_id)
        answer = Hello(
            records=(self._home_record(),),
            sent_ms=self._clock.now_ms(),
            offset_ms=offset.offset_ms,
            levels=self._levels if with_levels else None,
        )
        await stream.write_frame(encode_hello(answer))

    def _told(self, peer: str, levels: frozenset[Level] | None) -> None:
        """A hello/1 tells the peer's levels; a hello/0 none (SPEC §20.7.1)."""
        if levels is None:
            self._peer_levels.greeted_older(peer)
        else:
            self._peer_levels.remember(peer, levels)

    async def _take_records(self, peer: str, hello: Hello, protocol: str) -> None:
        for record in hello.records:
            try:
                await self._learn(record)
            except RemoteProtocolError as exc:  # forged costs the sender; skewed does not
                self._standing.refused(peer, exc, protocol=protocol, whole_frame=False)
                log.info("a home record in a hello from %s was refused: %s", peer[-8:], exc)
            except HearthError as exc:
                if store_failed(exc):  # the store failed: the node fail-stops
                    raise
                log.warning("a home record in a hello could not be kept: %s", exc)
