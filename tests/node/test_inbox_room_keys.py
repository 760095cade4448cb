"""ROOM_KEYs on arrival (node/delivery/inbox.py) over a real store and real vodozemac: what a
key opens reaches the app in its sender's order, whatever order the batches came in (SPEC
§8.2, §8.4, §27.11)."""

from __future__ import annotations

from collections.abc import Sequence

import vodozemac

from hearthmesh.node.delivery.inbox import Inbox, StoreOutcome
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto, Recipient
from hearthmesh.node.e2ee.key_forwarding import take_forwarded
from hearthmesh.node.e2ee.opened_late import LateNews
from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.events import NodeEvent
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.arrival import reaches_the_app
from hearthmesh.protocol.content import (
    CONTACT_CONTENT_TYPE,
    ContactAction,
    ContactEvent,
    encode_contact,
)
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.envelope import Envelope, Kind, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, keypair_from_seed
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.storage.api import AppendRequest, AppendResult, FriendRequest
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.store import KvStore

from .test_inbox import OURS, PEER, arrival, make_inbox, uid
from .test_inbox import store as store

ALICE = keypair_from_seed(bytes([21]) * 32)
"""The sender: one key as both its user and its device (as `test_inbox.sealed` seals)."""
OUR_DEVICE = keypair_from_seed(bytes([22]) * 32)
ROOM = direct_room_id(uid(ALICE), uid(OURS))
PICKLE_KEY = b"p" * 32
NOW_MS = 1_700_000_000_000


class _Alice:
    """Alice's device: her Megolm sessions, shared with our device over Olm."""

    def __init__(self, ours: DeviceCrypto) -> None:
        self.crypto = DeviceCrypto(
            MemoryStore(), pickle_key=PICKLE_KEY, device_key=ALICE, user=uid(ALICE)
        )
        self.bundle = self.crypto.key_bundle(NOW_MS)
        self._our_bundle = ours.key_bundle(NOW_MS)
        self._seq = 0
        self._session = vodozemac.GroupSession()

    def rotate(self) -> Envelope:
        """Start a new session; its ROOM_KEY for our device."""
        self.start()
        return self.share()

    def start(self) -> None:
        """Start a new session, shared with nobody yet."""
        self._session = vodozemac.GroupSession()
        self.crypto.keep_new_outbound(ROOM, self._session, now_ms=NOW_MS)

    def share(self) -> Envelope:
        """A ROOM_KEY of the current session for our device, from its current index."""
        [shares] = self.crypto.share(ROOM, self._session, [Recipient(bundle=self._our_bundle)])
        body = e2ee.encode_room_key_shares(shares)
        return self._seal(Kind.ROOM_KEY, e2ee.ROOM_KEY_CONTENT_TYPE, body)

    def send(self, text: bytes, content_type: str = "text/plain") -> Envelope:
        body, _ = e2ee.encrypt_content(self._session, content_type, text)
        return self._seal(Kind.MESSAGE, e2ee.ENCRYPTED_CONTENT_TYPE, body)

    def _seal(self, kind: Kind, content_type: str, body: bytes) -> Envelope:
        self._seq += 1
        return seal(
            ALICE,
            kind=kind,
            room=ROOM,
            sender_user=uid(ALICE),
            seq=self._seq,
            hlc=Timestamp(wall_ms=NOW_MS + self._seq, counter=0),
            content_type=content_type,
            body=body,
        )


def _take_alices_key(
    ours: DeviceCrypto,
    opener: RoomOpener,
    store: KvStore,
    alice: _Alice,
    session_id: bytes,
    news: LateNews,
    now_ms: int,
) -> tuple[int, StoreOutcome]:
    """Her home's answer to our key request for `session_id` (the session from the first
    index she holds), taken in as the node takes it (SPEC §27.13.2)."""
    answer = e2ee.ForwardAnswer(
        sender_bundle=alice.bundle,
        messages=tuple(alice.crypto.forward([(ROOM, session_id)], ours.key_bundle(NOW_MS))),
    )
    return take_forwarded(
        ours,
        opener,
        store,
        answer,
        users={uid(OURS)},
        now_ms=now_ms,
        news=news,
        owner=DeviceId(ALICE.public),
    )


def _opening_inbox(store: KvStore) -> tuple[Inbox, _Alice]:
    """Our inbox, opening with our device's keys in `store`, and alice sharing with it."""
    ours = DeviceCrypto(store, pickle_key=PICKLE_KEY, device_key=OUR_DEVICE, user=uid(OURS))
    return make_inbox(opener=RoomOpener(ours)), _Alice(ours)


def _shown(inbox: Inbox, store: KvStore, batch: list[Envelope], now_ms: int) -> list[bytes]:
    """Deliver one batch; the bodies of what went to the app, in order."""
    outcome = inbox.accept(store, [arrival(e) for e in batch], now_ms=now_ms, peer=PEER)
    assert all(r.status is AckStatus.STORED for r in outcome.results)
    return [e.body for e in outcome.released if reaches_the_app(e)]


def test_what_a_room_key_opens_keeps_its_place_when_a_read_back_reaches_past_the_key(
    store: KvStore,
) -> None:
    """Seqs: 1 key of S1, 2 a (S1), 3 key of S2, 4-5 b1 b2 (S2), 6 key of S3, 7 c (S3).
    The second batch's last commit is [a, key of S2]: releasing a reads 3-7 back from the
    store, the key of S2 among them. Its key used to be taken only after that release, so b1
    and b2 went out unopened (not shown), c went out opened, and b1 b2 were shown after c, as
    the key opened them (the order a CI run saw at index 200 of 300 messages)."""
    inbox, alice = _opening_inbox(store)
    key1 = alice.rotate()
    a = alice.send(b"a")
    key2 = alice.rotate()
    b = [alice.send(b"b1"), alice.send(b"b2")]
    key3 = alice.rotate()
    c = alice.send(b"c")

    # all stored ahead of their turn (b held: its key is not here), nothing released yet
    assert _shown(inbox, store, [*b, key3, c], now_ms=NOW_MS) == []
    shown = _shown(inbox, store, [key1, a, key2], now_ms=NOW_MS + 1)

    assert shown == [b"a", b"b1", b"b2", b"c"]
    # each once: the whole history again shows nothing more
    everything = [key1, a, key2, *b, key3, c]
    outcome = inbox.accept(store, [arrival(e) for e in everything], now_ms=NOW_MS + 2, peer=PEER)
    assert {r.status for r in outcome.results} == {AckStatus.DUPLICATE}
    assert outcome.released == []


class _CountingStore(MemoryStore):
    """A real store that notes how many envelopes each append took in."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[list[Kind]] = []

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.appends.append([r.envelope.kind for r in requests])
        return super().append_many(requests)


def test_a_room_key_earlier_in_a_batch_is_taken_in_before_the_next_message_is_opened() -> None:
    """Each ROOM_KEY is appended (its session taken in) before the encrypted envelope after it
    is opened, so the batch's messages open as they come, in order (SPEC §27.11)."""
    store = _CountingStore()
    inbox, alice = _opening_inbox(store)
    batch = [alice.rotate(), alice.send(b"a"), alice.send(b"b"), alice.rotate(), alice.send(b"c")]
    outcome = inbox.accept(store, [arrival(e) for e in batch], now_ms=NOW_MS, peer=PEER)
    assert all(r.status is AckStatus.STORED for r in outcome.results)
    assert [e.body for e in outcome.released if reaches_the_app(e)] == [b"a", b"b", b"c"]
    key, message = Kind.ROOM_KEY, Kind.MESSAGE
    assert store.appends == [[key], [message, message, key], [message]]


def test_a_friend_request_that_opens_when_its_key_comes_is_a_request_then(
    store: KvStore,
) -> None:
    """A friend request encrypted before its sender knew a device of ours is stored held;
    the key that opens it (here a ROOM_KEY, as a key request's answer does) makes it a
    request, as its arrival would have (SPEC §18, §27.11). It used to stay history only: the
    request never listed (the presence test on tmpfs, where the send beat the hello)."""
    inbox, alice = _opening_inbox(store)
    key = alice.rotate()
    request = alice.send(
        encode_contact(ContactEvent(action=ContactAction.REQUEST, note="hi")),
        content_type=CONTACT_CONTENT_TYPE,
    )
    _shown(inbox, store, [request], now_ms=NOW_MS)
    assert store.friend_requests(uid(OURS)) == []  # held: nothing read yet

    _shown(inbox, store, [key], now_ms=NOW_MS + 1)

    [pending] = store.friend_requests(uid(OURS))
    assert (pending.sender, pending.note) == (uid(ALICE), "hi")


def test_an_acceptance_a_forwarded_key_opens_makes_a_contact_who_gets_our_profile_at_once(
    store: KvStore,
) -> None:
    """Our friend request's acceptance, encrypted under a session whose key we lack, opens when
    a forward (or an answered key request, or a history handoff: one `AnswerTaker`) brings the
    key: the contact it makes goes to the node's reactions with the batch's outcome, as the
    inbox's does, so our profile goes to them at once (SPEC §27.13.6, §32.1). It used to be
    dropped: the profile waited for the next change of it."""
    ours = DeviceCrypto(store, pickle_key=PICKLE_KEY, device_key=OUR_DEVICE, user=uid(OURS))
    opener = RoomOpener(ours)
    inbox = make_inbox(opener=opener)
    store.put_friend_request(
        FriendRequest(sender=uid(OURS), recipient=uid(ALICE), created_ms=NOW_MS, note="hi")
    )
    alice = _Alice(ours)
    alice.rotate()  # its ROOM_KEY never reaches us
    accept = alice.send(
        encode_contact(ContactEvent(action=ContactAction.ACCEPT, note="")),
        content_type=CONTACT_CONTENT_TYPE,
    )
    assert _shown(inbox, store, [accept], now_ms=NOW_MS) == []  # held: nothing read yet
    session_id = e2ee.decode_encrypted_body(accept.body).session_id
    told: list[NodeEvent] = []
    published: list[StoreOutcome] = []
    news = LateNews(release=inbox._release, emit=told.append, publish=published.append)

    taken, outcome = _take_alices_key(ours, opener, store, alice, session_id, news, NOW_MS + 1)
    news.tell(outcome)

    assert taken == 1
    assert store.contacts(uid(OURS))  # the acceptance took effect as it opened
    [reacted] = published
    assert reacted.contacts_made == {ROOM}  # AfterStore shares our profile with them


def test_a_message_older_than_the_room_key_that_came_first_is_stored_held_not_refused(
    store: KvStore,
) -> None:
    """SPEC §27.11.2: alice encrypted a and b for us before she held our record (owed, §27.10.1),
    then shared her session with us from index 2 with c. Her outbox retried a and b later than
    the key and c went: a key that cannot open them was here. They were answered REJECTED
    UNDECRYPTABLE (50) and her outbox dropped them (4 lost in a 50-node run); they are stored
    and held, and the key her home answers our request with opens them."""
    ours = DeviceCrypto(store, pickle_key=PICKLE_KEY, device_key=OUR_DEVICE, user=uid(OURS))
    opener = RoomOpener(ours)
    inbox = make_inbox(opener=opener)
    alice = _Alice(ours)
    alice.start()  # she holds no record of ours yet: no share for us
    early = [alice.send(b"a"), alice.send(b"b")]
    key, late = alice.share(), alice.send(b"c")

    assert _shown(inbox, store, [key, late], now_ms=NOW_MS) == []  # waits for a and b's seqs
    outcome = inbox.accept(store, [arrival(e) for e in early], now_ms=NOW_MS + 1, peer=PEER)

    assert [r.status for r in outcome.results] == [AckStatus.STORED] * 2
    assert [e.body for e in outcome.released if reaches_the_app(e)] == [b"c"]
    session_id = e2ee.decode_encrypted_body(late.body).session_id
    assert store.held_sessions(10) == [(ROOM, session_id)]  # what key requests ask for
    news = LateNews(release=inbox._release, emit=lambda _: None, publish=lambda _: None)
    taken, opened = _take_alices_key(ours, opener, store, alice, session_id, news, NOW_MS + 2)
    assert taken == 1
    assert [e.body for e in opened.released] == [b"a", b"b"]
    assert opened.opened_held == {session_id: 2}  # they leave the undecryptable count at once
    assert store.held_sessions(10) == []


def test_a_batch_whose_room_key_opens_a_held_message_tells_no_log_entries(
    store: KvStore,
) -> None:
    """A message stored held, then opened by a ROOM_KEY later in its batch, moves to the log's
    end as it opens (SPEC §27.13.5): the batch's appends no longer say what the log holds, so
    it tells none (`StoreOutcome.logged` None) and a client feed reads the log."""
    inbox, alice = _opening_inbox(store)
    key = alice.rotate()
    message = alice.send(b"m")
    before = store.last_arrival()
    outcome = inbox.accept(
        store, [arrival(message), arrival(key)], now_ms=NOW_MS, peer=PEER, log=True
    )
    assert [e.body for e in outcome.released if reaches_the_app(e)] == [b"m"]
    assert outcome.logged is None
    # it leaves the undecryptable count when the batch commits (SPEC §27.13.3)
    assert outcome.opened_held == {e2ee.decode_encrypted_body(message.body).session_id: 1}
    logged = store.arrivals_after(before, limit=10).entries
    assert [e.event.envelope.message_id for e in logged] == [key.message_id, message.message_id]
