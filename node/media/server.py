"""Serving `/hearthmesh/media/0` (SPEC §25): a blob goes only to a peer that may see it.

A peer may fetch a blob if it is one of our own user's homes, or a home node (by the newest
home record we hold) of a user who is a member of a room where our own user sent a message
with that blob. A reference someone else wrote opens nothing here: anyone can name a digest,
and a stranger who DMs us one must not get the blob by it (issue #12). The media-reference
index (storage/media_refs.py, written in each append transaction) turns that into one prefix
scan plus the member lists of those rooms, read in one store hop; the home lookup is the
in-memory directory. No history is scanned, so a refusal costs as little as an answer. A blob
we hold damaged is answered `UNREADABLE` and charged to no one: the fault is ours (§11.8.7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.protocol.access import may_read
from hearthmesh.protocol.errors import (
    NotAuthorized,
    NotFound,
    RemoteProtocolError,
    TooLarge,
    UnreadableItem,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.media import (
    MAX_BLOB_BYTES,
    answer_frames,
    decode_request,
    encode_media_error,
)
from hearthmesh.storage.api import MediaInfo, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["MediaServer"]

log = logging.getLogger(__name__)

FRAMES_PER_WRITE: Final = 4
"""Chunks written in one bridge hop (1 MiB): few hops, bounded bytes in flight per write."""
REQUESTS_PER_S: Final = 2
REQUESTS_BURST: Final = 20
"""Media requests a peer may make (SPEC §25.3.3): a chat's images at once, then 2 a second."""


class MediaServer:
    """Answers media requests from the blobs in the store."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        directory: HomeDirectory,
        own_user: UserId,
        sibling_peers: Callable[[], frozenset[str]],
        on_refused: Callable[[str, RemoteProtocolError], None],
        on_unreadable: Callable[[str, UnreadableItem], None],
        clock: Clock,
    ) -> None:
        self._store = store
        self._limits = RateLimiter(REQUESTS_PER_S, REQUESTS_BURST, clock)
        self._directory = directory
        self._own_user = own_user
        self._sibling_peers = sibling_peers
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self._on_unreadable = on_unreadable
        """Logs a damaged blob once (`Supervisor.unreadable`); no peer is charged for it."""
        self.refused = 0
        """Requests answered with an ERROR frame (for tests and status)."""

    async def serve(self, stream: FrameStream) -> None:
        """Answer one request, then let the host close the stream."""
        request = await stream.read_request(self._note_refusal)
        if request is None:
            return
        try:
            self._limits.require(stream.remote_peer, "media requests")
            digest = decode_request(request)
            frames = answer_frames(await self._blob_for(stream.remote_peer, digest))
        except RemoteProtocolError as exc:
            self._note_refusal(stream.remote_peer, exc)
            frames = [encode_media_error(exc)]
        except UnreadableItem as exc:  # never served; the reply names no local path
            self._on_unreadable("media server", exc)
            frames = [encode_media_error(UnreadableItem("media unreadable here", item=exc.item))]
        try:
            for start in range(0, len(frames), FRAMES_PER_WRITE):
                await stream.write_frames(frames[start : start + FRAMES_PER_WRITE])
        except StreamClosed:  # the asker gave up: nothing of ours depends on it
            log.info("media stream to %s closed before the answer was sent", stream.remote_peer)

    def _note_refusal(self, peer: str, error: RemoteProtocolError) -> None:
        self.refused += 1
        self._on_refused(peer, error)
        log.debug("media request from %s refused: %s (code %d)", peer[-8:], error, error.code)

    async def _blob_for(self, peer: str, digest: bytes) -> bytes:
        """The blob, if `peer` may see it.

        Raises:
            NotFound: we neither hold the blob nor know of a reference to it, or we may serve
                it but do not hold it (yet).
            NotAuthorized: `peer` is not a home of anyone who may see it (a member of a room
                where our user sent it).
            TooLarge: a blob over MAX_BLOB_BYTES (never fetched or uploaded that way).
            UnreadableItem: we hold it, but its file is damaged or gone (answered UNREADABLE).
        """
        viewers, held = await self._store.read(_viewers, self._store.store, digest, self._own_user)
        if not viewers and held is None:
            raise NotFound("no such media here")
        own_home = peer in self._sibling_peers()
        if not may_read(peer, viewers, own_home=own_home, homes_of=self._directory.homes):
            raise NotAuthorized("not a home of a member of a room that references this media")
        if held is None:
            raise NotFound("this media is not here (yet)")
        if held.size > MAX_BLOB_BYTES:
            raise TooLarge(f"media over {MAX_BLOB_BYTES} bytes is not served")
        data = await self._store.read(self._store.store.read_media, digest)
        if data is None:
            raise NotFound("this media is not here")
        return data


def _viewers(store: Store, digest: bytes, own_user: UserId) -> tuple[set[UserId], MediaInfo | None]:
    """Members of the rooms where `own_user` sent `digest`, and the blob's metadata if held.

    Others' references open nothing: a stranger naming a digest is no member sending the blob
    with its message (SPEC §25.3.1).
    """
    references = store.media_references(digest)
    rooms = {reference.room for reference in references if reference.sender == own_user}
    viewers = {member.user for room in rooms for member in store.members(room)}
    return viewers, store.media_info(digest)
