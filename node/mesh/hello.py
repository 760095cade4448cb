"""Hello between two connected nodes: swap home records, and let a device learn its clock offset.

The connecting side asks; the other answers with its own records and its estimate of the
asker's clock offset. A linked device that hears from its own user's home corrects its clock
by that offset (SPEC §24), so a device whose clock is minutes off still stamps times that every
other node accepts and orders alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hearthmesh.node.clock import CorrectedClock
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.errors import HearthError, RemoteProtocolError, store_failed
from hearthmesh.protocol.hello import HELLO_PROTOCOL, Hello, decode_hello, encode_hello
from hearthmesh.protocol.hlc import estimate_offset

__all__ = ["HelloService"]

log = logging.getLogger(__name__)


class HelloService:
    """Both sides of `/hearthmesh/hello/0`."""

    def __init__(
        self,
        *,
        host: P2PHost,
        clock: CorrectedClock,
        home_record: Callable[[], bytes],
        learn: Callable[[bytes], Awaitable[None]],
        takes_time_from: Callable[[str], bool],
        standing: PeerStanding,
    ) -> None:
        self._host = host
        self._clock = clock
        self._home_record = home_record
        self._learn = learn
        self._takes_time_from = takes_time_from
        self._standing = standing

    async def hello(self, peer_id: str) -> None:
        """Ask `peer_id`; adopt its records, and its view of our clock if it is our home."""
        async with await self._host.open_stream(peer_id, HELLO_PROTOCOL) as stream:
            ours = Hello(records=(self._home_record(),), sent_ms=self._clock.now_ms())
            await stream.write_frame(encode_hello(ours))
            try:
                answer = decode_hello(await stream.read_frame())
            except RemoteProtocolError as exc:
                self._standing.refused(peer_id, exc)
                raise
        await self._take_records(peer_id, answer)
        if answer.offset_ms is not None and self._takes_time_from(peer_id):
            if answer.offset_ms != 0:
                log.info(
                    "clock corrected by %+d ms, as our home %s sees it",
                    answer.offset_ms,
                    peer_id[-8:],
                )
            self._clock.correct(answer.offset_ms)

    async def serve(self, stream: FrameStream) -> None:
        """Answer one hello."""
        try:
            asked = decode_hello(await stream.read_frame())
        except StreamClosed:
            return
        except RemoteProtocolError as exc:  # hello has no error frame: the stream just ends
            self._standing.refused(stream.remote_peer, exc)
            log.debug("hello from %s refused: %s", stream.remote_peer[-8:], exc)
            return
        received_ms = self._clock.now_ms()
        offset = estimate_offset(
            event_ms=asked.sent_ms, send_ms=asked.sent_ms, receive_ms=received_ms
        )
        answer = Hello(
            records=(self._home_record(),), sent_ms=received_ms, offset_ms=offset.offset_ms
        )
        await stream.write_frame(encode_hello(answer))
        await self._take_records(stream.remote_peer, asked)

    async def _take_records(self, peer: str, hello: Hello) -> None:
        for record in hello.records:
            try:
                await self._learn(record)
            except RemoteProtocolError as exc:  # forged costs the sender; skewed does not
                self._standing.refused(peer, exc, whole_frame=False)
                log.info("a home record in a hello from %s was refused: %s", peer[-8:], exc)
            except HearthError as exc:
                if store_failed(exc):  # the store failed: the node fail-stops
                    raise
                log.warning("a home record in a hello could not be kept: %s", exc)
