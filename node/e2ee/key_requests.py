"""Room-key requests to a session's sender `/hearthmesh/key-request/0` (SPEC §27.13).

A member's home that holds envelopes whose ROOM_KEY never reached it (its device was not in
its user's record when the sender shared, or the share did not open) asks the home of the
device that sent them. `KeyRequestServer` answers a home that the named user's record lists
with a key bundle, when that user is a member of every asked room now, with the sessions this
device owns and gave to that user (or to our own user): exported at the first index held,
Olm-encrypted to that device, like a forward (§27.12). Refusals are charged to the peer.
`KeyRequests` is the asking side: in rounds that read what is held (only while something may
be, `HeldWatch`, its wake source), it asks each due session's sender, then sleeps until the
next due time (`next_round_ms`), a hold written or a request's end, and no less than an
interval after the round began. A session is asked first
one to two intervals after it is seen held, then with backoff doubling from the interval, each
wait counted from the end of the request before and shortened by a spread drawn for it (so
homes that saw a session held together, a group's members at its formation, do not ask its
sender in step, not even after asks that all timed out together: SPEC §27.13.3); a session
whose `KEY_REQUEST_ATTEMPTS`-th counted request ended and which is still held counts its
envelopes as undecryptable (it is still asked, at the longest backoff), until a key opens them
(`after_batch`: at once). An answer that cannot be right is charged to the peer (§27.13.2).

State: the server's per-peer rate buckets; the asker's attempts and next time per held
session (at most `MAX_TRACKED_SESSIONS`), the sender devices it is asking now, its count of
keys taken and its undecryptable envelopes per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, NoReturn

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.held_watch import HeldWatch
from hearthmesh.node.e2ee.key_forwarding import AnswerTaker
from hearthmesh.node.e2ee.request_server import RequestServer
from hearthmesh.node.e2ee.room_opener import MAX_OPENED_PER_KEY
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import (
    HearthError,
    KeyMismatch,
    KeyRequestDenied,
    NotListed,
    RemoteProtocolError,
)
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = [
    "MAX_TRACKED_SESSIONS",
    "REQUESTS_BURST",
    "REQUESTS_PER_S",
    "KeyRequestServer",
    "KeyRequests",
    "listed_bundle",
]

log = logging.getLogger(__name__)

REQUESTS_PER_S: Final = 1
REQUESTS_BURST: Final = 4
"""Requests one peer may make: a few pages of 64 sessions at once, then one a second."""
MAX_TRACKED_SESSIONS: Final = 256
"""Held sessions the asker keeps attempts for; more wait until some open or are purged."""
MAX_SENDERS_PER_ROUND: Final = 8
"""Sender devices asked at once (each in a task of its own: the outstanding requests)."""
ASK_TIMEOUT_S: Final = 10.0
RECORD_LOOKUP_S: Final = 3.0
"""How long the server looks up a member's record that does not list the asking home yet (a
device linked since we last heard), and the asker the record of a sender it does not know."""


class KeyRequestServer(RequestServer):
    """Answers room members' homes that ask for the keys of our sessions."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        crypto: DeviceCrypto,
        directory: HomeDirectory,
        find_record: Callable[[UserId], Awaitable[bool]],
        members_of: Callable[[RoomId], Awaitable[frozenset[UserId]]],
        own_bundle: e2ee.KeyBundle,
        user: UserId,
        clock: Clock,
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        super().__init__(what="key request", on_refused=on_refused)
        self._store = store
        self._crypto = crypto
        self._directory = directory
        self._find_record = find_record
        self._members_of = members_of
        self._own_bundle = own_bundle
        self._user = user
        self._limits = RateLimiter(REQUESTS_PER_S, REQUESTS_BURST, clock)
        self.answered = 0
        """Requests answered with at least one key (for tests and status)."""

    async def answer(self, peer: str, request: bytes) -> bytes:
        """The asked sessions we own and gave the asking user, to its device on `peer`."""
        self._limits.require(peer, "key requests")
        asked = e2ee.decode_key_request(request)
        for room in {room for room, _ in asked.sessions}:
            if asked.user not in await self._members_of(room):
                self._deny(asked.user, peer)
        recipient = await self._recipient(asked.user, peer)
        messages = await self._store.run(self._answer, self._store.store, asked, recipient)
        if messages:
            self.answered += 1
        return e2ee.encode_forward_answer(
            e2ee.ForwardAnswer(sender_bundle=self._own_bundle, messages=tuple(messages))
        )

    def _deny(self, user: UserId, peer: str) -> NoReturn:
        """Refuse a request naming a non-member: KEY_REQUEST_DENIED to a home the record we
        hold lists, NOT_LISTED to any other (no lookup: a stranger learns no one's rooms, and
        costs us no search), as a member's unlisted home is told (SPEC §27.13.1)."""
        record = self._directory.record(user)
        if record is None or record.bundle_at_home(peer) is None:
            raise NotListed("the asking home is not a device its user's record lists")
        raise KeyRequestDenied("room keys go to the room's current members only")

    async def _recipient(self, user: UserId, peer: str) -> e2ee.KeyBundle:
        return await listed_bundle(self._directory, self._find_record, user, peer)

    def _answer(
        self, store: Store, asked: e2ee.KeyRequest, recipient: e2ee.KeyBundle
    ) -> list[tuple[int, bytes]]:
        """Olm messages to `recipient` with the asked sessions we own and gave (or owe) its
        user, each from the index its user was first given or sent while we knew none of its
        devices (§27.10.1): a member reads what it was sent, never what came before it joined
        (§27.10.2). Our own user's devices get the whole session."""
        own_device = self._own_bundle.device
        ours: list[tuple[RoomId, bytes]] = []
        from_index: dict[bytes, int] = {}
        for room, session_id in asked.sessions:
            kept = store.inbound_session(room, session_id)
            if kept is None or kept.owner != own_device:
                continue
            given = (
                0
                if asked.user == self._user
                else store.first_index_given(room, session_id, asked.user)
            )
            if given is not None:
                ours.append((room, session_id))
                from_index[session_id] = given
        return self._crypto.forward(ours, recipient, from_index=from_index) if ours else []


async def listed_bundle(
    directory: HomeDirectory,
    find_record: Callable[[UserId], Awaitable[bool]],
    user: UserId,
    peer: str,
) -> e2ee.KeyBundle:
    """The bundle `user`'s record lists for the device on `peer`: the one device keys go to
    for that user there (SPEC §27.13.1, §30.6).

    Raises:
        NotListed: the newest record we hold or find lists no such device (not yet, never,
            or revoked since).
    """
    record = directory.record(user)
    if record is None or record.bundle_at_home(peer) is None:
        with contextlib.suppress(TimeoutError):  # a member: its lookups are backed off
            async with asyncio.timeout(RECORD_LOOKUP_S):
                await find_record(user)
        record = directory.record(user)
    bundle = None if record is None else record.bundle_at_home(peer)
    if bundle is None:
        raise NotListed("the asking home is not a device its user's record lists")
    return bundle


@dataclass(frozen=True, slots=True)
class _Held:
    """One session some stored envelopes wait for, and who sent them."""

    room: RoomId
    session_id: bytes
    sender_user: UserId
    sender_device: DeviceId
    envelopes: int


class KeyRequests:
    """Asks senders for the keys of what we hold unopened (see the module docstring)."""

    def __init__(
        self,
        *,
        host: P2PHost,
        links: PeerLinks,
        store: AsyncStore,
        taker: AnswerTaker,
        directory: HomeDirectory,
        find_record: Callable[[UserId], Awaitable[bool]],
        user: UserId,
        device: DeviceId,
        clock: Clock,
        interval_ms: int,
        rng: random.Random | None = None,
    ) -> None:
        self._host = host
        self._taker = taker
        self._links = links
        self._store = store
        self._directory = directory
        self._find_record = find_record
        self._user = user
        self._device = device
        self._clock = clock
        self._interval_ms = interval_ms
        self._rng = rng or random.Random()
        self.held = HeldWatch(store)
        """What may be held; its `after_batch` wakes this asker (the wiring subscribes it)."""
        self._attempts: OrderedDict[bytes, e2ee.KeyRequestSchedule] = OrderedDict()
        self._outstanding: set[DeviceId] = set()
        """Sender devices being asked now (at most MAX_SENDERS_PER_ROUND)."""
        self.keys_taken = 0
        """Room keys senders gave us on request."""
        self._undecryptable: dict[bytes, int] = {}
        """Held envelopes of each session asked for KEY_REQUEST_ATTEMPTS times in vain
        (§27.13.3), as the last round read them, less those opened since (`after_batch`)."""
        self.rounds = 0
        """Rounds run (each a look at what is held): what the asker's wake-ups cost."""

    @property
    def undecryptable(self) -> int:
        """Held envelopes whose session was asked for KEY_REQUEST_ATTEMPTS times (§27.13.3)."""
        return sum(self._undecryptable.values())

    def after_batch(self, outcome: StoreOutcome) -> None:
        """A store batch committed (a `StoreOutcomes` reaction): wake the asker for a hold it
        wrote (`HeldWatch`); held envelopes a key opened (a ROOM_KEY, a forward, an answer)
        leave the undecryptable count now, not at the next round (due only at the session's
        next ask, or the 30 s backstop), and a session some opened in is read again at the
        next round: a round's read may predate the opening, and a key from a later index leaves
        the earlier envelopes held."""
        self.held.after_batch(outcome)
        for session_id, opened in outcome.opened_held.items():
            if session_id not in self._attempts:
                continue
            self.held.wake()
            left = self._undecryptable.pop(session_id, 0) - opened
            if left > 0:
                self._undecryptable[session_id] = left

    async def run(self) -> None:
        """Ask while something is held, until cancelled: a round reads what is held and asks
        what is due, then the asker sleeps to the next due time, or until a hold is written or
        a request ends, and at least until an interval after the round began (asleep while
        nothing is held). Each sender is asked
        in a task of its own: asked one after another, a sender that did not answer held every
        other one and the next rounds for its ASK_TIMEOUT_S (at 50 nodes a home was owed keys
        by a dozen senders, some of them loaded, SPEC §20.6)."""
        async with asyncio.TaskGroup() as asking:
            while True:
                self.rounds += 1
                await self.ask_due(asking)
                await self.held.next_round(self._until_next_round_s(), self._interval_ms / 1000)

    def _until_next_round_s(self) -> float | None:
        now = self._clock.now_ms()
        due = e2ee.next_round_ms(self._attempts.values(), now)
        return None if due is None else (due - now) / 1000

    async def ask_due(self, asking: asyncio.TaskGroup) -> None:
        """One round: start asking the senders of the due held sessions that are not being
        asked already, so that at most MAX_SENDERS_PER_ROUND are asked at once."""
        held = await self.held.read(_held)
        now = self._clock.now_ms()
        waiting = [
            (sender, sessions)
            for sender, sessions in self._due(held, now).items()
            if sender[1] not in self._outstanding
        ]
        for (user, device), sessions in waiting[: MAX_SENDERS_PER_ROUND - len(self._outstanding)]:
            for _, session_id in sessions:
                self._attempts[session_id].asked()
            self._outstanding.add(device)
            asking.create_task(self._ask_within(user, device, sessions))
        self._undecryptable = {
            h.session_id: h.envelopes
            for h in held
            if (a := self._attempts.get(h.session_id)) and a.undecryptable
        }

    def _due(
        self, held: list[_Held], now: int
    ) -> dict[tuple[UserId, DeviceId], list[tuple[RoomId, bytes]]]:
        still = {h.session_id for h in held}
        for gone in [s for s in self._attempts if s not in still]:
            del self._attempts[gone]  # opened (by any path) or purged
        due: dict[tuple[UserId, DeviceId], list[tuple[RoomId, bytes]]] = {}
        for h in held:
            if h.sender_device == self._device:
                continue  # our own session: only our siblings could have it (§27.12)
            attempts = self._attempts.get(h.session_id)
            if attempts is None:
                if len(self._attempts) >= MAX_TRACKED_SESSIONS:
                    continue
                attempts = self._attempts[h.session_id] = e2ee.KeyRequestSchedule.seen(
                    now, interval_ms=self._interval_ms, spread=self._rng.random()
                )
            if not attempts.due(now):
                continue
            sessions = due.setdefault((h.sender_user, h.sender_device), [])
            if len(sessions) < e2ee.MAX_FORWARDED_KEYS:
                sessions.append((h.room, h.session_id))
        return due

    async def _ask_within(
        self, user: UserId, device: DeviceId, sessions: list[tuple[RoomId, bytes]]
    ) -> None:
        """`_ask`, bounded by ASK_TIMEOUT_S; a failure is logged and takes nothing. However it
        ends, each asked session still tracked waits its next backoff from now."""
        not_listed = False
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                taken = await self._ask(user, device, sessions)
            self.keys_taken += taken  # not `+= await`: that reads the count before the wait
        except NotListed as exc:
            not_listed = True  # our record has not reached the sender yet: asked again later
            log.info("%s does not list this home yet: %s", device.hex()[:12], exc)
        except (HearthError, P2PError, TimeoutError) as exc:
            log.info("asking %s for room keys failed: %s", device.hex()[:12], exc)
        finally:
            self._outstanding.discard(device)
            now = self._clock.now_ms()
            for _, session_id in sessions:
                if (attempts := self._attempts.get(session_id)) is None:
                    continue
                if not_listed:
                    attempts.refused_not_listed(now, spread=self._rng.random())
                else:
                    attempts.ended(now, spread=self._rng.random())
            self.held.wake()  # a next due time, and any session this sender held back

    async def _ask(
        self, user: UserId, device: DeviceId, sessions: list[tuple[RoomId, bytes]]
    ) -> int:
        record = self._directory.record(user)
        if record is None or record.home_of(device) is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECORD_LOOKUP_S):
                    await self._find_record(user)
            record = self._directory.record(user)
        peer = None if record is None else record.home_of(device)
        listed = None if record is None else record.bundle_of(device)
        if record is None or peer is None or listed is None:
            log.info("no home of sender device %s known: asked later", device.hex()[:12])
            return 0
        await self._links.reach(peer, record.addrs)
        request = e2ee.KeyRequest(user=self._user, sessions=tuple(sessions))
        async with await self._host.open_stream(peer, e2ee.KEY_REQUEST_PROTOCOL) as stream:
            await stream.write_frame(e2ee.encode_key_request(request))
            answer = self._taker.read(peer, await stream.read_frame(), e2ee.KEY_REQUEST_PROTOCOL)
        if answer.sender_bundle != listed:  # not charged: the record we hold may be stale
            raise KeyMismatch("the answering bundle is not the one the sender's record lists")
        return await self._taker.take(
            peer, answer, protocol=e2ee.KEY_REQUEST_PROTOCOL, owner=device
        )


def _held(store: Store) -> list[_Held]:
    """The sessions stored envelopes wait for, each with its sender and how many wait."""
    found: list[_Held] = []
    for room, session_id in store.held_sessions(MAX_TRACKED_SESSIONS):
        waiting = store.held_encrypted(session_id, MAX_OPENED_PER_KEY)
        event = next((e for m, _ in waiting if (e := store.get_event(m)) is not None), None)
        if event is None:
            continue  # purged meanwhile
        envelope = event.envelope
        found.append(
            _Held(room, session_id, envelope.sender_user, envelope.sender_device, len(waiting))
        )
    return found
