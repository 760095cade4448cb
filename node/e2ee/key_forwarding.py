"""Room keys forwarded between our user's own devices over `/hearthmesh/key-forward/0`
(SPEC §27.12).

A device that holds envelopes it cannot open (linked after they were sent, or missed by a
sender's share) asks its sibling homes for the keys of those sessions; `KeyForwardServer`
answers a sibling only, Olm-encrypted to the key bundle our record lists for that sibling's
device, with every asked session it holds exported at the first index it holds. `KeyForwarding`
is the asking side: while something is held (a `HeldWatch`: an idle home reads nothing, and
sleeps until a committed batch holds something), it asks each connected sibling that is due
(`e2ee.SiblingAsks`: the interval on while it forwards keys, backing off while it forwards
none, all due again when a hold is written), takes in what verifies, and opens what waited;
between rounds it sleeps to the next due ask or a hold written, and at least an interval.
State: the server's per-peer rate buckets; the asker's `SiblingAsks` and counts of keys taken
in. The asker's wake source is its `held` watch, which the wiring subscribes to `StoreOutcomes`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Set
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.held_watch import HeldWatch
from hearthmesh.node.e2ee.opened_late import LateNews, react_to_opened
from hearthmesh.node.e2ee.request_server import RequestServer
from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.mesh.answers import read_answer
from hearthmesh.node.mesh.standing import AnswerCharge
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import (
    HearthError,
    KeyMismatch,
    NotAuthorized,
    NotFound,
    RemoteProtocolError,
)
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = [
    "FORWARDS_BURST",
    "FORWARDS_PER_S",
    "AnswerTaker",
    "KeyForwardServer",
    "KeyForwarding",
    "take_forwarded",
]

log = logging.getLogger(__name__)

FORWARDS_PER_S: Final = 1
FORWARDS_BURST: Final = 4
"""Requests one sibling may make: a few pages of 64 sessions at once, then one a second."""
ASK_TIMEOUT_S: Final = 10.0


class KeyForwardServer(RequestServer):
    """Answers our sibling homes' requests for room keys."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        crypto: DeviceCrypto,
        homes: OwnHomes,
        clock: Clock,
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        super().__init__(what="key forward", on_refused=on_refused)
        self._store = store
        self._crypto = crypto
        self._homes = homes
        self._limits = RateLimiter(FORWARDS_PER_S, FORWARDS_BURST, clock)

    async def answer(self, peer: str, request: bytes) -> bytes:
        """Every asked session we hold, to the device our record lists on `peer`."""
        if not self._homes.is_sibling(peer):
            raise NotAuthorized("room keys go to this user's own homes only")
        recipient = self._homes.sibling_bundle(peer)
        if recipient is None:
            raise NotFound("our record lists no key bundle of that home's device")
        self._limits.require(peer, "key forwarding")
        sessions = e2ee.decode_forward_request(request)
        messages = await self._store.run(self._crypto.forward, sessions, recipient)
        return e2ee.encode_forward_answer(
            e2ee.ForwardAnswer(sender_bundle=self._homes.own_bundle, messages=tuple(messages))
        )


class KeyForwarding:
    """Asks our sibling homes for the keys of what we hold unopened."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        taker: AnswerTaker,
        homes: OwnHomes,
        clock: Clock,
        interval_ms: int,
        rng: random.Random | None = None,
    ) -> None:
        self._host = host
        self._taker = taker
        self._store = store
        self._homes = homes
        self._clock = clock
        self._interval_ms = interval_ms
        self._rng = rng or random.Random()
        self._asks = e2ee.SiblingAsks(interval_ms)
        self.held = HeldWatch(store)
        """What may be held; its `after_batch` wakes this asker (the wiring subscribes it)."""
        self.keys_taken = 0
        """Room keys our siblings forwarded that we did not hold."""
        self.asks = 0
        """Asks made of siblings (each a stream)."""

    async def run(self) -> None:
        """Ask while something is held, until cancelled: a round asks the due siblings, then
        the asker sleeps to the next due ask or until a hold is written, and at least an
        interval from the round's start (asleep while nothing is held)."""
        while True:
            held = await self.held.read(_held_sessions)
            if held:
                if self.held.new_holds():
                    self._asks.held_more()
                await self.ask_siblings(held)
            delay_s = self._until_next_s() if held else None
            await self.held.next_round(delay_s, self._interval_ms / 1000)

    def _until_next_s(self) -> float | None:
        """To the next due ask of a connected sibling, and at most an interval while a sibling
        is not connected (it is looked for as before); None with neither."""
        now = self._clock.now_ms()
        siblings, connected = self._siblings()
        due = self._asks.next_ms(connected, now)
        waits = [] if due is None else [due - now]
        if len(connected) < len(siblings):
            waits.append(self._interval_ms)
        return min(waits) / 1000 if waits else None

    def _siblings(self) -> tuple[frozenset[str], list[str]]:
        """Our user's other homes, and those connected now, in order."""
        siblings = frozenset(self._homes.sibling_peers())
        self._asks.keep(siblings)
        return siblings, sorted(siblings & set(self._host.connected_peers()))

    async def ask_siblings(self, sessions: list[tuple[RoomId, bytes]]) -> int:
        """Ask each connected sibling that is due for `sessions`; how many keys were newly
        taken in."""
        taken = 0
        for peer in self._asks.due(self._siblings()[1], self._clock.now_ms()):
            got = 0
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    got = await self._ask(peer, sessions)
            except (HearthError, P2PError, TimeoutError) as exc:
                log.info("asking %s for room keys failed: %s", peer[-8:], exc)
            self.asks += 1
            self._asks.asked(peer, self._clock.now_ms(), taken=got, spread=self._rng.random())
            taken += got
        self.keys_taken += taken
        return taken

    async def _ask(self, peer: str, sessions: list[tuple[RoomId, bytes]]) -> int:
        async with await self._host.open_stream(peer, e2ee.KEY_FORWARD_PROTOCOL) as stream:
            await stream.write_frame(e2ee.encode_forward_request(sessions))
            answer = self._taker.read(peer, await stream.read_frame(), e2ee.KEY_FORWARD_PROTOCOL)
        listed = self._homes.sibling_bundle(peer)
        if listed is None or answer.sender_bundle != listed:
            raise KeyMismatch("a forwarder's bundle is not the one our record lists")
        return await self._taker.take(peer, answer, protocol=e2ee.KEY_FORWARD_PROTOCOL)


def _held_sessions(store: Store) -> list[tuple[RoomId, bytes]]:
    return store.held_sessions(e2ee.MAX_FORWARDED_KEYS)


class AnswerTaker:
    """Reads and takes in the keys of an ANSWER to a request of ours (a sibling's forward, a
    sender's answer to a key request, an admin's history handoff) for our user, and opens what
    waited for them; an answer that cannot be right is charged to the peer that gave it
    (`on_bad_answer`, SPEC §27.13.2, §30.6.4; our siblings are never charged, §11.6.2).
    Holds no state: what the three askers share to do it."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        crypto: DeviceCrypto,
        opener: RoomOpener,
        user: UserId,
        clock: Clock,
        news: LateNews,
        on_bad_answer: AnswerCharge,
    ) -> None:
        self._store = store
        self._crypto = crypto
        self._opener = opener
        self._user = user
        self._clock = clock
        self._news = news
        self._on_bad_answer = on_bad_answer

    def read(self, peer: str, frame: bytes, protocol: str) -> e2ee.ForwardAnswer:
        """The ANSWER in `peer`'s `frame` on `protocol` (its bundle is the caller's to check).

        Raises:
            MalformedMessage: the frame is no ANSWER or ERROR frame: charged to `peer`.
            RemoteProtocolError: the refusal an ERROR frame's code names: an answer, never
                charged.
        """
        return read_answer(
            frame,
            e2ee.decode_forward_answer,
            peer=peer,
            charge=functools.partial(self._on_bad_answer, protocol=protocol),
            refused_as=f"{protocol} refused",
        )

    async def take(
        self,
        peer: str,
        answer: e2ee.ForwardAnswer,
        *,
        protocol: str,
        owner: DeviceId | None = None,
    ) -> int:
        """`take_forwarded` in one write batch; what it opened that the app was passed is
        told to it once the batch committed (SPEC §27.13.5). How many keys were new.

        Raises:
            RemoteProtocolError: a key that cannot be right; nothing is taken, and `peer` is
                charged by `answer_points` (a key to a key of ours no longer held,
                UNDECRYPTABLE, is not).
        """
        try:
            taken, outcome = await self._store.run(
                take_forwarded,
                self._crypto,
                self._opener,
                self._store.store,
                answer,
                users={self._user},
                now_ms=self._clock.now_ms(),
                news=self._news,
                owner=owner,
            )
        except RemoteProtocolError as exc:  # nothing taken (SPEC §27.13.2)
            self._on_bad_answer(peer, exc, protocol=protocol)
            raise
        self._news.tell(outcome)
        return taken


def take_forwarded(
    crypto: DeviceCrypto,
    opener: RoomOpener,
    store: Store,
    answer: e2ee.ForwardAnswer,
    *,
    users: Set[UserId],
    now_ms: int,
    news: LateNews,
    owner: DeviceId | None = None,
) -> tuple[int, StoreOutcome]:
    """Take the keys of a verified ANSWER in (`owner`: each must be that device's session,
    SPEC §27.13.2) and open what waited for them, in one write batch; how many were new, and
    what the opening did, for `LateNews.tell`: what opened that the release order passed
    already (in sender order: several sessions may interleave) and the direct rooms whose
    contact events made us contacts (SPEC §27.13.6, §32.1)."""
    keys = crypto.accept_forwarded(answer.sender_bundle, answer.messages, owner=owner)
    by_session = {key.session_id: opener.open_held(store, key.session_id) for key in keys}
    opened = [shown for shown_of_one in by_session.values() for shown in shown_of_one]
    opened.sort(key=lambda e: e.order_key)  # their senders' order (SPEC §4.5)
    outcome = StoreOutcome(
        contacts_made=react_to_opened(store, opened, users=users, now_ms=now_ms),
        released=news.passed(store, opened),
        opened_held={session: len(shown) for session, shown in by_session.items() if shown},
    )
    return len(keys), outcome
