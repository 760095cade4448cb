"""Serving `/hearthmesh/caps/0`: the capability levels this node advertises (SPEC §20.5).

State: none (the levels are this implementation's, `OUR_LEVELS`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.capabilities import Level, decode_caps_request, encode_caps_answer
from hearthmesh.protocol.errors import RemoteProtocolError

__all__ = ["OUR_LEVELS", "CapabilityServer"]

OUR_LEVELS: Final = frozenset({Level.CORE, Level.IM, Level.MULTI_DEVICE, Level.RELAY, Level.E2EE})
"""What this implementation does today: Megolm is on the message path (SPEC §27.10-27.13)."""


class CapabilityServer:
    """Answers a capability request with `OUR_LEVELS`; a malformed request is charged."""

    def __init__(self, *, on_refused: Callable[[str, RemoteProtocolError], None]) -> None:
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self._answer = encode_caps_answer(OUR_LEVELS)

    async def serve(self, stream: FrameStream) -> None:
        """Answer one request, then let the host close the stream."""
        request = await stream.read_request(self._on_refused)
        if request is None:
            return
        try:
            decode_caps_request(request)
        except RemoteProtocolError as exc:
            self._on_refused(stream.remote_peer, exc)
            return
        with contextlib.suppress(StreamClosed):  # the asker gave up
            await stream.write_frame(self._answer)
