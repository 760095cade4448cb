"""Repair sync between homes of one user (ARCHITECTURE §8, SPEC §23).

Pushing every new envelope to the siblings (the inbox and `Node.send` do that) keeps the homes
of a user in step while they are up; this service repairs what that missed: a device that was
away, or one linked late, which must receive the whole history. Per room it runs the range
reconciliation of `protocol.reconcile` over (HLC, message id), then hands what the other side
lacks to the outbox for that node, oldest first, so membership events arrive before the
messages that depend on them. State owned here: the peers with a rooms-only exchange in
flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol.delivery import encode_error
from hearthmesh.protocol.destinations import node_destination
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.errors import MalformedMessage, NotAuthorized, RemoteProtocolError
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.reconcile import Reconciler, SortedItems
from hearthmesh.protocol.rooms import is_direct_room
from hearthmesh.protocol.sync import (
    SYNC_PROTOCOL,
    RoomEntry,
    RoomList,
    RoomReconcile,
    SyncDone,
    decode_sync_frame,
    encode_done,
    encode_reconcile,
    encode_room_list,
)
from hearthmesh.storage.api import Direction, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["SyncReport", "SyncService"]

log = logging.getLogger(__name__)

_SCAN_PAGE = 1000


@dataclass(slots=True)
class SyncReport:
    """What one sync run found."""

    rooms: int = 0
    sent: int = 0
    """Envelopes queued for the other home."""
    missing: int = 0
    """Envelopes the other home will send us."""


class SyncService:
    """Runs the initiator side (`sync_with`) and serves the responder side (`serve`)."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        rooms: RoomRegistry,
        user: UserId,
        is_sibling: Callable[[str], bool],
        now_ms: Callable[[], int],
        wake_outbox: Callable[[], None],
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        self._host = host
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self._store = store
        self._rooms = rooms
        self._user = user
        self._is_sibling = is_sibling
        self._now_ms = now_ms
        self._wake_outbox = wake_outbox
        self._learning: set[str] = set()
        """Peers with a rooms-only exchange (`learn_rooms`) in flight."""

    async def sync_with(self, peer_id: str) -> SyncReport:
        """Reconcile every room with one of our sibling homes."""
        report = SyncReport()
        async with await self._host.open_stream(peer_id, SYNC_PROTOCOL) as stream:
            for room in await self._exchange_rooms(stream):
                reconciler = await self._reconciler(room)
                await stream.write_frame(encode_reconcile(room, reconciler.initiate()))
                while True:
                    frame = decode_sync_frame(await stream.read_frame())
                    if not isinstance(frame, RoomReconcile) or frame.room != room:
                        raise MalformedMessage("expected a reconciliation message for the room")
                    if not frame.message:
                        break  # the peer is finished with this room
                    step = reconciler.reconcile(frame.message)
                    await self._push(peer_id, reconciler, step.have, report)
                    report.missing += len(step.need)
                    if step.reply is None:
                        await stream.write_frame(encode_reconcile(room, b""))
                        break
                    await stream.write_frame(encode_reconcile(room, step.reply))
                report.rooms += 1
            await stream.write_frame(encode_done())
        log.info(
            "synced %d rooms with %s: sent %d, %d to come",
            report.rooms,
            peer_id[-8:],
            report.sent,
            report.missing,
        )
        return report

    async def learn_rooms(self, peer_id: str) -> None:
        """Only the ROOMS exchange of a sync, then DONE (SPEC §23.5): opens the direct rooms
        the sibling lists and we do not know, and reconciles nothing. At most one runs per
        peer; a call while one is running returns at once (the deferred retry asks again)."""
        if peer_id in self._learning:
            return
        self._learning.add(peer_id)
        try:
            async with await self._host.open_stream(peer_id, SYNC_PROTOCOL) as stream:
                await self._exchange_rooms(stream)
                await stream.write_frame(encode_done())
        finally:
            self._learning.discard(peer_id)

    async def _exchange_rooms(self, stream: FrameStream) -> list[RoomId]:
        """The initiator's ROOMS, the peer's ROOMS, and the union (SPEC §23.3)."""
        await stream.write_frame(encode_room_list(await self._room_list()))
        theirs = decode_sync_frame(await stream.read_frame())
        if not isinstance(theirs, RoomList):
            raise MalformedMessage("expected the peer's room list")
        return await self._union(theirs)

    async def serve(self, stream: FrameStream) -> None:
        """The responder side, for one of our sibling homes only."""
        peer_id = stream.remote_peer
        if not self._is_sibling(peer_id):
            refusal = NotAuthorized("sync is for homes of one user")
            self._on_refused(peer_id, refusal)
            await stream.write_frame(encode_error(refusal))
            return
        report = SyncReport()
        reconcilers: dict[RoomId, _RoomSync] = {}
        try:
            first = decode_sync_frame(await stream.read_frame())
            if not isinstance(first, RoomList):
                raise MalformedMessage("a sync starts with the room list")
            await stream.write_frame(encode_room_list(await self._room_list()))
            await self._union(first)
            while True:
                frame = decode_sync_frame(await stream.read_frame())
                if isinstance(frame, SyncDone):
                    return
                if not isinstance(frame, RoomReconcile):
                    raise MalformedMessage("expected a reconciliation message")
                if not frame.message:
                    continue  # the initiator is finished with this room
                reconciler = reconcilers.get(frame.room)
                if reconciler is None:
                    reconciler = reconcilers[frame.room] = await self._reconciler(frame.room)
                step = reconciler.reconcile(frame.message)
                await self._push(peer_id, reconciler, step.have, report)
                await stream.write_frame(encode_reconcile(frame.room, step.reply or b""))
        except StreamClosed:
            return
        except RemoteProtocolError as exc:
            self._on_refused(peer_id, exc)
            log.warning("sync from %s refused: %s", peer_id[-8:], exc)
            await stream.write_frame(encode_error(exc))

    async def _room_list(self) -> list[RoomEntry]:
        return await self._store.read(_room_list, self._store.store, self._user)

    async def _union(self, theirs: RoomList) -> list[RoomId]:
        """Both sides' rooms; direct rooms we did not know are opened from the peer's entry."""
        ours = {entry.room for entry in await self._room_list()}
        for entry in theirs.rooms:
            known = entry.room in ours
            if not known and self._user in entry.direct_users:
                if not is_direct_room(entry.room, entry.direct_users):
                    raise MalformedMessage("a direct room entry whose users do not match its id")
                a, b = entry.direct_users
                await self._store.run(
                    self._rooms.open_direct, self._store.store, a, b, now_ms=self._now_ms()
                )
        return sorted(ours | {entry.room for entry in theirs.rooms})

    async def _reconciler(self, room: RoomId) -> _RoomSync:
        items = await self._store.read(_room_items, self._store.store, room)
        return _RoomSync(items)

    async def _push(
        self, peer_id: str, room: _RoomSync, have: list[MessageId], report: SyncReport
    ) -> None:
        """Queue what the peer lacks for it, oldest first (membership before messages)."""
        if not have:
            return
        wanted = set(have)
        ordered = [m for m in room.order if m in wanted]
        # Due at once, yet in history order: distinct due times ending now, 1 ms apart.
        first_ms = self._now_ms() - len(ordered)
        plan = [(m, first_ms + i) for i, m in enumerate(ordered)]
        queued = await self._store.run_long(
            self._store.store.enqueue_many, node_destination(peer_id), plan
        )
        report.sent += queued
        self._wake_outbox()


class _RoomSync(Reconciler):
    """A reconciler over a snapshot of one room, which also keeps the ids in history order."""

    def __init__(self, items: list[tuple[Timestamp, MessageId]]) -> None:
        super().__init__(SortedItems(items))
        self.order = [message_id for _, message_id in items]


def _room_list(store: Store, user: UserId) -> list[RoomEntry]:
    entries = []
    for room in store.rooms_of(user):
        members = [m.user for m in store.members(room)]
        direct = tuple(members) if is_direct_room(room, members) else ()
        entries.append(RoomEntry(room=room, direct_users=direct))
    return entries


def _room_items(store: Store, room: RoomId) -> list[tuple[Timestamp, MessageId]]:
    items: list[tuple[Timestamp, MessageId]] = []
    cursor = None
    while True:
        page = store.page_history(
            room, cursor=cursor, direction=Direction.FORWARD, limit=_SCAN_PAGE
        )
        items += [(e.envelope.hlc, e.envelope.message_id) for e in page.events]
        if page.next is None:
            return items
        cursor = page.next
