"""The serving side of the request-answer key protocols (SPEC §27.2.2, §27.12, §27.13).

Each of `/hearthmesh/keys/0`, `/hearthmesh/key-forward/0` and `/hearthmesh/key-request/0`
reads one request frame per stream and writes one answer frame, or an ERROR `[3, code,
message]` for a refusal, which is also counted and charged to the peer (SPEC §11.6).
`RequestServer` does that once; a subclass says how a request is answered. State: the count
of refusals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.errors import RemoteProtocolError

__all__ = ["RequestServer"]

log = logging.getLogger(__name__)


class RequestServer:
    """One request, one answer; a refusal is counted, charged and answered with its code."""

    def __init__(
        self, *, what: str, on_refused: Callable[[str, RemoteProtocolError], None]
    ) -> None:
        self._what = what
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self.refused = 0
        """Requests answered with an ERROR frame (for tests and status)."""

    async def answer(self, peer: str, request: bytes) -> bytes:
        """The answer frame to `request` from `peer`.

        Raises:
            RemoteProtocolError: the request is refused (answered with its code).
        """
        raise NotImplementedError

    async def serve(self, stream: FrameStream) -> None:
        """Answer one request, then let the host close the stream."""
        peer = stream.remote_peer
        request = await stream.read_request(self._refuse)
        if request is None:
            return
        try:
            frame = await self.answer(peer, request)
        except RemoteProtocolError as exc:
            self._refuse(peer, exc)
            frame = e2ee.encode_claim_error(exc)
        try:
            await stream.write_frame(frame)
        except StreamClosed:  # the asker gave up
            log.info("%s stream to %s closed before the answer", self._what, peer[-8:])

    def _refuse(self, peer: str, error: RemoteProtocolError) -> None:
        self.refused += 1
        self._on_refused(peer, error)
        log.debug("%s from %s refused: %s (code %d)", self._what, peer[-8:], error, error.code)
