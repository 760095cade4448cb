"""Both sides of `/hearthmesh/fetch/0` (SPEC §26): serve a sender's envelopes by number, ask.

The answering side serves a peer only if it is a home of a current member of the room or one of
our own user's other homes (`protocol.access.may_read`): the room's history is for its members.
The asking side returns the answer unverified; `GapFetcher` feeds it through the receive path,
which verifies every item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.mesh.answers import read_answer
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol.access import may_read
from hearthmesh.protocol.delivery import encode_error
from hearthmesh.protocol.errors import NotAuthorized, RemoteProtocolError
from hearthmesh.protocol.fetch import (
    FETCH_PROTOCOL,
    FetchAnswer,
    FetchRequest,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)
from hearthmesh.protocol.identity import DeviceId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["FetchService"]

log = logging.getLogger(__name__)

REQUESTS_PER_S: Final = 10
REQUESTS_BURST: Final = 50
"""Fetch requests a peer may make (SPEC §26.3.1): a burst of gaps at once, then 10 a second."""


class FetchService:
    """Serves fetch requests (`serve`) and asks peers (`fetch`)."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        rooms: RoomRegistry,
        directory: HomeDirectory,
        is_sibling: Callable[[str], bool],
        certificate_of: Callable[[DeviceId], bytes | None],
        on_refused: Callable[[str, RemoteProtocolError], None],
        clock: Clock,
    ) -> None:
        self._limits = RateLimiter(REQUESTS_PER_S, REQUESTS_BURST, clock)
        self._host = host
        self._store = store
        self._rooms = rooms
        self._directory = directory
        self._is_sibling = is_sibling
        self._certificate_of = certificate_of
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self.refused = 0
        """Requests answered with an ERROR frame (status and tests)."""

    async def fetch(self, peer_id: str, request: FetchRequest) -> FetchAnswer:
        """Ask `peer_id` for a sender's envelopes; the answer is not verified yet.

        Raises:
            RemoteProtocolError: the peer refused (with its code), or answered nonsense (a
                frame that is neither an answer nor an ERROR frame: charged to the peer).
            P2PError: the peer could not be reached.
        """
        async with await self._host.open_stream(peer_id, FETCH_PROTOCOL) as stream:
            await stream.write_frame(encode_request(request))
            frame = await stream.read_frame()
        return read_answer(  # SPEC §26.5
            frame,
            decode_answer,
            peer=peer_id,
            charge=self._on_refused,
            refused_as=f"{peer_id[-8:]} refused the fetch",
        )

    async def serve(self, stream: FrameStream) -> None:
        """Answer one request, or refuse it with an ERROR frame of its code."""
        peer = stream.remote_peer
        try:
            frame = await stream.read_frame()
            self._limits.require(peer, "fetch requests")
            request = decode_request(frame)
            events = await self._store.run(self._answer, self._store.store, peer, request)
        except StreamClosed:
            return
        except RemoteProtocolError as exc:
            self.refused += 1
            self._on_refused(peer, exc)
            log.debug("fetch from %s refused: %s (code %d)", peer[-8:], exc, exc.code)
            await stream.write_frame(encode_error(exc))
            return
        await stream.write_frame(encode_answer(events))

    def _answer(self, store: Store, peer: str, request: FetchRequest) -> list[tuple[bytes, bytes]]:
        """(certificate, envelope) pairs to answer with; runs in a store write batch.

        Raises:
            NotAuthorized: `peer` is neither our sibling nor a home of a member of the room.
        """
        members = self._rooms.members(store, request.room)
        if not may_read(
            peer, members, own_home=self._is_sibling(peer), homes_of=self._directory.homes
        ):
            raise NotAuthorized("fetching is for homes of the room's members")
        found = store.sender_events(
            request.room, request.sender_device, request.first_seq, request.last_seq
        )
        certificate = self._certificate_of(request.sender_device)
        if certificate is None:  # we cannot prove who sent them, so the asker could not verify
            return []
        return [(certificate, event.envelope.wire) for event in found]
