"""Fetching media a stored message references from the sender's homes (SPEC §25.4).

When a message with a media reference is stored here and the blob is not, a background fetch
asks the sender's home nodes (as the directory knows them) over `/hearthmesh/media/0`, checks
what comes back with `protocol.media.MediaDownload` (never more than the declared size; the
sha-256 must equal the digest), opens a sealed blob with the seal its message carries (the
plaintext must hash to the seal's digest, SPEC §28.3) and stores the ciphertext with its
seal. A round that gets nothing is retried with the outbox's backoff; after GIVE_UP_ATTEMPTS
rounds the fetch stops, and the client API starting one again (`wait_fetched`) begins a new
series. A peer that served bad bytes is not asked for that digest again for SHUN_MS. A blob
held damaged that another user sent is dropped and fetched again (`replace_damaged`, §11.8.7);
one only our user sent is kept (ours may be the only copy) and asked of our user's other homes,
whose good copy takes its place.
State owned here: the fetches running (one per digest, which API callers wait on), the peers
shunned per digest, and the damaged blobs being replaced; the blobs themselves are the
store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.backoff import next_attempt_ms
from hearthmesh.protocol.content import media_ref_of
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import (
    DamagedBlob,
    HearthError,
    NotFound,
    RemoteProtocolError,
    UnreadableItem,
    store_failed,
)
from hearthmesh.protocol.identity import Rng, UserId
from hearthmesh.protocol.media import (
    MAX_BLOB_BYTES,
    MAX_MEDIA_BYTES,
    MEDIA_PROTOCOL,
    MediaDownload,
    MediaRefused,
    encode_request,
)
from hearthmesh.protocol.media_seal import open_media
from hearthmesh.storage.api import MediaInfo, MediaReference, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["GIVE_UP_ATTEMPTS", "SHUN_MS", "MediaFetcher", "PeerShunned"]

log = logging.getLogger(__name__)

GIVE_UP_ATTEMPTS: Final = 12
"""Rounds over all sources before a background fetch stops (about 4 minutes of backoff)."""
SHUN_MS: Final = 10 * 60 * 1000
"""How long a peer that served bad bytes is not asked for that digest again."""
MAX_SHUNNED: Final = 4096
MAX_WANTED: Final = 256
"""Blobs fetched at once, at most; beyond it a want is dropped (the API can start it later)."""
MAX_TRANSFERS: Final = 2
"""Transfers running at once: each holds up to MAX_MEDIA_BYTES in memory."""
FRAME_TIMEOUT_S: Final = 15.0
"""Longest wait for the next frame of an answer before the source is given up."""
TRANSFER_TIMEOUT_S: Final = 120.0
LARGE_BYTES: Final = 1024 * 1024
"""Transfers at least this large are logged at info when they start and end."""


class PeerShunned(HearthError):
    """A peer that served bad bytes for a digest is not asked for it again for a while."""


@dataclass(slots=True)
class _Fetch:
    """A running fetch: API callers wait for its next round, and may cut its backoff short."""

    round_done: asyncio.Event = field(default_factory=asyncio.Event)
    poke: asyncio.Event = field(default_factory=asyncio.Event)


class MediaFetcher:
    """Background fetches, owned by the node's task group (`run` until cancelled)."""

    def __init__(
        self,
        *,
        host: P2PHost,
        links: PeerLinks,
        store: AsyncStore,
        directory: HomeDirectory,
        clock: Clock,
        rng: Rng,
        find_home: Callable[[UserId], Awaitable[bool]],
        own_user: UserId,
        on_bad_answer: Callable[[str, RemoteProtocolError], None],
        siblings: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        """`siblings()`: the peer ids of our user's other homes (`OwnHomes.sibling_peers`);
        `on_bad_answer` charges a peer whose answer broke SPEC §25.4.2 (§11.6.1)."""
        self._host = host
        self._on_bad_answer = on_bad_answer
        self._own_user = own_user
        self._siblings = siblings
        self._links = links
        self._store = store
        self._directory = directory
        self._clock = clock
        self._rng = rng
        self._find_home = find_home
        self._fetches: dict[bytes, _Fetch] = {}
        self._shunned: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        """(peer, digest) -> until when that peer is not asked for that digest."""
        self._transfers = asyncio.Semaphore(MAX_TRANSFERS)
        self._group: asyncio.TaskGroup | None = None
        self._replacing: set[bytes] = set()
        """Damaged blobs being checked and dropped: one check each, however many ask."""
        self.fetched = 0
        """Blobs fetched and stored (for tests and status)."""

    async def run(self) -> None:
        """Own the fetch tasks until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            for digest in self._fetches:  # wanted before the node finished starting
                group.create_task(self._fetch(digest))
            await asyncio.Event().wait()

    def want(self, envelopes: Iterable[Envelope]) -> None:
        """Fetch in the background each blob these newly stored envelopes reference."""
        for envelope in envelopes:
            media = media_ref_of(envelope)
            if media is None or media.digest in self._fetches:
                continue
            if media.size > MAX_MEDIA_BYTES:
                log.info("media %s: %d bytes, over the limit", media.digest.hex()[:12], media.size)
                continue
            self._start(media.digest)

    def _start(self, digest: bytes) -> _Fetch | None:
        fetch = self._fetches.get(digest)
        if fetch is not None:
            return fetch
        if len(self._fetches) >= MAX_WANTED:
            log.warning("%d media fetches running: %s waits", MAX_WANTED, digest.hex()[:12])
            return None
        fetch = self._fetches[digest] = _Fetch()
        if self._group is not None:
            self._group.create_task(self._fetch(digest))
        return fetch

    def replace_damaged(self, exc: UnreadableItem) -> None:
        """An unreadable item was met (`Supervisor.observe_unreadable`): a blob held damaged
        that another user sent is dropped and fetched again from their homes (SPEC §11.8.7).
        One that only our user sent is kept, ours may be its only copy, and asked of our
        user's other homes once each time it is met: a good copy replaces it."""
        if not isinstance(exc, DamagedBlob) or self._group is None:
            return
        if exc.digest in self._replacing or exc.digest in self._fetches:
            return
        self._replacing.add(exc.digest)
        self._group.create_task(self._replace(exc.digest))

    async def _replace(self, digest: bytes) -> None:
        try:
            store = self._store
            damage = await store.run_long(_drop_if_damaged, store.store, digest, self._own_user)
            if damage is _Damage.DROPPED:
                log.warning("media %s held damaged: dropped, fetching it again", digest.hex()[:12])
                self._start(digest)
            elif damage is _Damage.KEPT and await self._repair_from_siblings(digest):
                log.warning(
                    "media %s held damaged: replaced by a sibling's copy", digest.hex()[:12]
                )
        finally:
            self._replacing.discard(digest)

    async def _repair_from_siblings(self, digest: bytes) -> bool:
        """Ask our user's other homes for a blob we hold damaged; True once a good copy was
        stored in its place (`put_media(over_damaged=True)`: only this path reads the held
        copy, its metadata kept)."""
        references = await self._store.read(self._store.store.media_references, digest)
        references = [r for r in references if r.size <= MAX_BLOB_BYTES]
        if not references:
            return False
        siblings = sorted(self._siblings() - {self._host.peer_id})
        sources = [(peer, references[0]) for peer in siblings]
        return await self._ask(digest, sources, over_damaged=True)

    async def wait_fetched(self, digest: bytes, *, wait_s: float) -> bool:
        """For the client API: is the blob here, after at most one more round (`wait_s`)?

        Starts a fetch (or cuts a running one's backoff short) if a stored event references
        the blob.

        Raises:
            NotFound: no stored event here references the blob, so there is nothing to fetch.
        """
        if await self._held(digest) is not None:
            return True
        if not await self._store.read(self._store.store.media_references, digest):
            raise NotFound("no such media here")
        fetch = self._start(digest)
        if fetch is None:
            return False
        done = fetch.round_done
        fetch.poke.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await done.wait()
        return await self._held(digest) is not None

    async def _held(self, digest: bytes) -> MediaInfo | None:
        return await self._store.read(self._store.store.media_info, digest)

    async def _fetch(self, digest: bytes) -> None:
        fetch = self._fetches[digest]
        try:
            for attempt in range(1, GIVE_UP_ATTEMPTS + 1):
                fetch.poke.clear()
                got = await self._held(digest) is not None or await self._round(digest)
                done, fetch.round_done = fetch.round_done, asyncio.Event()
                done.set()
                if got:
                    return
                delay_ms = next_attempt_ms(attempt, 0, self._rng)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_ms / 1000):
                        await fetch.poke.wait()  # an API caller is waiting: try now
            log.info("media %s: gave up after %d rounds", digest.hex()[:12], GIVE_UP_ATTEMPTS)
        except HearthError as exc:  # e.g. one unreadable item: this fetch ends, the node goes on
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.warning("media %s not fetched: %s", digest.hex()[:12], exc)
        finally:
            del self._fetches[digest]
            fetch.round_done.set()

    async def _round(self, digest: bytes) -> bool:
        """Ask each source once; True once the blob is stored."""
        references = await self._store.read(self._store.store.media_references, digest)
        references = [r for r in references if r.size <= MAX_BLOB_BYTES]
        return await self._ask(digest, await self._sources(digest, references))

    async def _ask(
        self,
        digest: bytes,
        sources: list[tuple[str, MediaReference]],
        *,
        over_damaged: bool = False,
    ) -> bool:
        """Ask each source in turn; True once one's blob is stored."""
        for peer, reference in sources:
            try:
                await self.fetch_from(peer, digest, reference, over_damaged=over_damaged)
            except (MediaRefused, RemoteProtocolError) as exc:  # fetch_from logged it
                log.debug("media %s: %s: %s", digest.hex()[:12], peer[-8:], exc)
            except (HearthError, OSError, TimeoutError) as exc:
                log.info("media %s: %s unreachable: %s", digest.hex()[:12], peer[-8:], exc)
            else:
                return True
        return False

    async def _sources(
        self, digest: bytes, references: list[MediaReference]
    ) -> list[tuple[str, MediaReference]]:
        """The homes of each sender that references the blob, but us and shunned peers."""
        now = self._clock.now_ms()
        found: dict[str, MediaReference] = {}
        for reference in references:
            homes = self._directory.homes(reference.sender)
            if not homes and await self._find_home(reference.sender):
                homes = self._directory.homes(reference.sender)
            for home in homes:
                if home != self._host.peer_id and self._shunned.get((home, digest), 0) <= now:
                    found.setdefault(home, reference)
        return list(found.items())

    def _shun(self, peer: str, digest: bytes) -> None:
        self._shunned[peer, digest] = self._clock.now_ms() + SHUN_MS
        self._shunned.move_to_end((peer, digest))
        while len(self._shunned) > MAX_SHUNNED:
            self._shunned.popitem(last=False)

    def shunned(self, peer: str, digest: bytes) -> bool:
        """Is `peer` barred from serving `digest` (it served bad bytes lately)?"""
        return self._shunned.get((peer, digest), 0) > self._clock.now_ms()

    async def fetch_from(
        self, peer: str, digest: bytes, reference: MediaReference, *, over_damaged: bool = False
    ) -> MediaInfo:
        """One transfer from one peer, verified, then stored (`over_damaged`: in place of a
        copy held damaged).

        Raises:
            MediaRefused: the peer answered ERROR (not found, not authorized, ...).
            RemoteProtocolError: the peer broke SPEC §25 (bad frames, too many bytes, another
                blob's bytes: charged to it as a whole frame) or served a blob its seal does
                not open (MediaTampered, SPEC §28.3: its sender's fault, not charged):
                nothing is stored, and the peer is shunned for this digest.
            TooLarge: the reference declares more than MAX_BLOB_BYTES; no one was asked.
            PeerShunned: the peer served bad bytes for this digest lately; it was not asked.
            P2PError, TimeoutError: the peer could not be reached or stalled.
        """
        if self.shunned(peer, digest):
            raise PeerShunned(f"{peer[-8:]} served bad bytes for this media lately")
        download = MediaDownload(digest, reference.size)  # the reference's size: not the peer's
        try:
            return await self._transfer(peer, digest, download, reference, over_damaged)
        except MediaRefused as exc:
            log.info("media %s: %s %s", digest.hex()[:12], peer[-8:], exc)
            raise
        except RemoteProtocolError as exc:
            log.warning("media %s from %s discarded: %s", digest.hex()[:12], peer[-8:], exc)
            self._shun(peer, digest)
            self._on_bad_answer(peer, exc)  # `answer_points`: MEDIA_TAMPERED costs nothing
            raise

    async def _transfer(
        self,
        peer: str,
        digest: bytes,
        download: MediaDownload,
        reference: MediaReference,
        over_damaged: bool,
    ) -> MediaInfo:
        async with self._transfers:
            large = reference.size >= LARGE_BYTES
            if large:
                log.info(
                    "media %s: fetching %d bytes from %s",
                    digest.hex()[:12],
                    reference.size,
                    peer[-8:],
                )
            started = time.perf_counter()
            await self._links.reach(peer, self._directory.addresses(reference.sender))
            async with (
                asyncio.timeout(TRANSFER_TIMEOUT_S),
                await self._host.open_stream(peer, MEDIA_PROTOCOL) as stream,
            ):
                await stream.write_frame(encode_request(digest))
                data = None
                while data is None:
                    async with asyncio.timeout(FRAME_TIMEOUT_S):
                        frame = await stream.read_frame()
                    data = download.receive(frame)
            if reference.seal is not None:
                open_media(data, reference.seal)  # the plaintext is checked, never kept here
            info = await self._store.run_long(
                self._store.store.put_media,
                data,
                content_type=reference.content_type,
                now_ms=self._clock.now_ms(),
                seal=reference.seal,
                over_damaged=over_damaged,
            )
            self.fetched += 1
            if large:
                log.info(
                    "media %s: %d bytes fetched from %s in %.1f s",
                    digest.hex()[:12],
                    len(data),
                    peer[-8:],
                    time.perf_counter() - started,
                )
            return info


class _Damage(Enum):
    """What `_drop_if_damaged` found and did."""

    NONE = "none"
    """Not damaged (now), or its file cannot be read now: that may pass, the bytes may be good."""
    DROPPED = "dropped"
    """Damaged and another user sent it: dropped, their homes hold a good copy."""
    KEPT = "kept"
    """Damaged and only our user sent it: kept, ours may be the only copy."""


def _drop_if_damaged(store: Store, digest: bytes, own_user: UserId) -> _Damage:
    """Drop the blob if it is still damaged (a fetch may have replaced it meanwhile) and
    another user sent it."""
    try:
        store.read_media(digest)
    except DamagedBlob:
        if all(reference.sender == own_user for reference in store.media_references(digest)):
            return _Damage.KEPT
        store.delete_media(digest)
        return _Damage.DROPPED
    except UnreadableItem:
        pass
    return _Damage.NONE
