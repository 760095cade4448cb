"""History for new members `/hearthmesh/history/0` (SPEC §30.6): the pump of
`protocol.history_share`.

`HistoryServer` runs at an admin's home: a member's listed device asks, for a group whose
setting is `shared`, and gets the last N messages before that member's ADD queued to its user's
homes as stored (ciphertext, on the guaranteed path, SPEC §11), and the Megolm keys that open
them, exported at the lowest index among them and Olm-encrypted to the asking device; nothing
before that index. `HistoryFetch` is the joiner's side: it asks the admin's home that let it in,
and takes the keys only from a device that admin's record lists while the fold here says they
are an admin; the envelopes arrive like any other and open with those keys.

State: the server's per-peer rate buckets, the count of requests answered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.key_forwarding import AnswerTaker
from hearthmesh.node.e2ee.key_requests import listed_bundle
from hearthmesh.node.e2ee.request_server import RequestServer
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId
from hearthmesh.protocol.errors import (
    HistoryNotShared,
    KeyRequestDenied,
    NotListed,
    RemoteProtocolError,
)
from hearthmesh.protocol.history_share import (
    HISTORY_PROTOCOL,
    MAX_HISTORY_SCAN,
    HistoryRequest,
    check_history_answer,
    check_history_request,
    choose_history,
    decode_history_request,
    encode_history_request,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import (
    HISTORY_SHARED,
    Action,
    Role,
    decode_membership,
)
from hearthmesh.storage.api import Cursor, Direction, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["REQUESTS_BURST", "REQUESTS_PER_S", "HistoryFetch", "HistoryServer"]

log = logging.getLogger(__name__)

REQUESTS_PER_S: Final = 1
REQUESTS_BURST: Final = 2
"""History requests one peer may make: a retry, then one a second. Each scans up to
MAX_HISTORY_SCAN stored events and queues up to 256 envelopes: this bounds what one peer costs."""
_PAGE: Final = 256


class HistoryServer(RequestServer):
    """Gives a new member of a `shared` group its history (see the module docstring)."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        rooms: RoomRegistry,
        crypto: DeviceCrypto,
        directory: HomeDirectory,
        find_record: Callable[[UserId], Awaitable[bool]],
        own_bundle: e2ee.KeyBundle,
        wake_outbox: Callable[[], None],
        clock: Clock,
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        super().__init__(what="history request", on_refused=on_refused)
        self._store = store
        self._rooms = rooms
        self._crypto = crypto
        self._directory = directory
        self._find_record = find_record
        self._own_bundle = own_bundle
        self._wake_outbox = wake_outbox
        self._clock = clock
        self._limits = RateLimiter(REQUESTS_PER_S, REQUESTS_BURST, clock)
        self.answered = 0
        """Requests answered with history (for tests and status)."""

    async def answer(self, peer: str, request: bytes) -> bytes:
        """Queue the shared messages to the asking user and answer with their keys.

        Raises:
            HistoryNotShared: the group shares none, or the user is no member of it now.
            KeyRequestDenied: the asking home is not a device the user's record lists.
            RateLimited: the peer asks too often.
        """
        self._limits.require(peer, "history requests")
        asked = decode_history_request(request)
        state = await self._store.run(self._rooms.state, self._store.store, asked.room)
        limit = check_history_request(state, asked.user)
        assert state is not None  # checked above
        try:
            recipient = await listed_bundle(self._directory, self._find_record, asked.user, peer)
        except NotListed as exc:  # SPEC §30.6 keeps KEY_REQUEST_DENIED for an unlisted home
            raise KeyRequestDenied(str(exc)) from None
        messages = await self._store.run(
            self._share,
            self._store.store,
            asked,
            limit,
            frozenset(state.members),
            recipient,
            self._clock.now_ms(),
        )
        self._wake_outbox()
        self.answered += 1
        return e2ee.encode_forward_answer(
            e2ee.ForwardAnswer(sender_bundle=self._own_bundle, messages=tuple(messages))
        )

    def _share(
        self,
        store: Store,
        asked: HistoryRequest,
        limit: int,
        members: frozenset[UserId],
        recipient: e2ee.KeyBundle,
        now_ms: int,
    ) -> list[tuple[int, bytes]]:
        """In one write batch: queue the chosen envelopes (due now, in history order) to the
        asking user's homes, and the Olm messages with their sessions' keys."""
        joined = self._joined_at(store, asked)
        shared = choose_history(
            _newest_first(store, asked.room, joined), limit=limit, members=members
        )
        first_ms = now_ms - len(shared.messages)
        store.enqueue_many(asked.user, [(m, first_ms + i) for i, m in enumerate(shared.messages)])
        sessions = [(asked.room, session) for session in shared.from_index]
        return self._crypto.forward(sessions, recipient, from_index=shared.from_index)

    def _joined_at(self, store: Store, asked: HistoryRequest) -> Cursor:
        """The history cursor of the user's latest ADD or JOIN: what is shared comes before it.

        Raises:
            HistoryNotShared: no such event held (a member by CREATE has nothing to be given).
        """
        for message_id in reversed(self._rooms.membership_events(asked.room)):
            event = store.get_event(message_id)
            if event is None:
                continue
            change = decode_membership(event.envelope.body)
            if change.action in (Action.ADD, Action.JOIN) and asked.user in change.targets:
                return event.cursor
        raise HistoryNotShared("no ADD of this user here")


def _newest_first(store: Store, room: RoomId, cursor: Cursor) -> Iterator[Envelope]:
    """The room's stored events before `cursor`, newest first, at most MAX_HISTORY_SCAN."""
    scanned = 0
    next_cursor: Cursor | None = cursor
    while next_cursor is not None and scanned < MAX_HISTORY_SCAN:
        page = store.page_history(
            room, direction=Direction.BACKWARD, cursor=next_cursor, limit=_PAGE
        )
        for event in reversed(page.events):
            yield event.envelope
        scanned += len(page.events)
        next_cursor = page.next


class HistoryFetch:
    """Asks the admin's home that let us in for the history the group shares."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        rooms: RoomRegistry,
        taker: AnswerTaker,
        directory: HomeDirectory,
        user: UserId,
    ) -> None:
        self._host = host
        self._taker = taker
        self._store = store
        self._rooms = rooms
        self._directory = directory
        self._user = user
        self.keys_taken = 0

    async def after_join(self, peer: str, room: RoomId, add: MessageId) -> int:
        """Ask `peer` (whose user sent our ADD `add`) for the shared history, when the group
        shares any; how many room keys were taken.

        Raises:
            HistoryNotShared: the ADD's sender is no admin here, or the answer comes from a
                device their record does not list at `peer`; nothing is taken.
            RemoteProtocolError: the admin's home refused (its code: not charged), or its
                answer cannot be right (charged, SPEC §30.6.4); nothing is taken.
        """
        state = await self._store.run(self._rooms.state, self._store.store, room)
        if state is None or state.history != HISTORY_SHARED:
            return 0
        event = await self._store.read(self._store.store.get_event, add)
        admitter = None if event is None else event.envelope.sender_user
        listed = None
        if admitter is not None and state.rank(admitter) >= Role.ADMIN:
            record = self._directory.record(admitter)
            listed = None if record is None else record.bundle_at_home(peer)
        if listed is None:
            raise HistoryNotShared("history is taken from the admitting admin's device only")
        request = HistoryRequest(room=room, user=self._user)
        async with await self._host.open_stream(peer, HISTORY_PROTOCOL) as stream:
            await stream.write_frame(encode_history_request(request))
            answer = self._taker.read(peer, await stream.read_frame(), HISTORY_PROTOCOL)
        # another bundle is not charged: the admin's record we hold may be stale (§27.13.2)
        taken = await self._taker.take(
            peer, check_history_answer(answer, listed), protocol=HISTORY_PROTOCOL
        )
        self.keys_taken += taken
        return taken
