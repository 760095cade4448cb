"""The arrival pump (node/delivery/inbox.py) over a real store: it does what the decision says,
one result per item in order, membership folded item by item, the store's answer as the ack
(SPEC §11.2.3, §11.3.2, §12.2)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from hearthmesh.node.delivery.inbox import Arrival, Inbox
from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.node.delivery.sent_in_hand import SentInHand
from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.node.social.privacy import Privacy
from hearthmesh.protocol.arrival import ArrivalRules
from hearthmesh.protocol.authority import DeferralPolicy
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.destinations import node_destination
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, seal
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    encode_membership,
)
from hearthmesh.protocol.private import PRIVATE_CONTENT_TYPE, encode_block_changed, self_room_id
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.protocol.rooms import direct_room_id, group_room_id
from hearthmesh.storage.api import (
    AppendRequest,
    AppendResult,
    FeedEntry,
    RelayQuota,
    StoredEvent,
)
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.store import KvStore

OURS, ADMIN, MEMBER, ABSENT = (keypair_from_seed(bytes([i]) * 32) for i in (11, 12, 13, 14))
NONCE = b"i" * 16
PEER = "12D3KooWInboxTestPeer"
_wall = itertools.count(1)


def uid(key: KeyPair) -> UserId:
    return UserId(key.public)


GROUP = group_room_id(uid(ADMIN), NONCE)


def sealed(
    who: KeyPair,
    seq: int,
    *,
    kind: Kind = Kind.MESSAGE,
    body: bytes = b"hi",
    wall_ms: int | None = None,
    content_type: str | None = None,
    room: RoomId = GROUP,
) -> Envelope:
    if content_type is None:
        content_type = MEMBERSHIP_CONTENT_TYPE if kind is Kind.MEMBERSHIP else "text/plain"
    return seal(
        who,
        kind=kind,
        room=room,
        sender_user=uid(who),
        seq=seq,
        hlc=Timestamp(wall_ms=next(_wall) if wall_ms is None else wall_ms, counter=0),
        content_type=content_type,
        body=body,
    )


def change(
    seq: int, action: Action, target: KeyPair, *, room: RoomId = GROUP, nonce: bytes = NONCE
) -> Envelope:
    """ADMIN's change of `room` (created with `nonce`)."""
    role = Role.ADMIN if action is Action.CREATE else Role.MEMBER
    body = MembershipChange(
        action=action, target=uid(target), role=role, nonce=nonce if seq == 1 else b""
    )
    return sealed(ADMIN, seq, kind=Kind.MEMBERSHIP, body=encode_membership(body), room=room)


def arrival(envelope: Envelope, recipient: KeyPair = OURS) -> Arrival:
    return Arrival(envelope=envelope, recipient=uid(recipient), certificate=b"cert")


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KvStore:
    quota = RelayQuota(max_count=1, max_bytes=1 << 20)
    if request.param == "memory":
        return MemoryStore(relay_quota=quota)
    return LmdbStore(tmp_path / "db", relay_quota=quota)


def make_inbox(
    *,
    deferrals: DeferralPolicy | None = None,
    opener: RoomOpener | None = None,
    siblings: tuple[bytes, ...] = (),
    sent: SentInHand | None = None,
) -> Inbox:
    """Our user's inbox; `deferrals` bounds how long a non-member is deferred, `opener` opens
    encrypted envelopes (none: they are stored as they come), `siblings` are the outbox
    destinations of our other homes."""
    local = {uid(OURS)}
    rules = ArrivalRules(local) if deferrals is None else ArrivalRules(local, deferrals=deferrals)
    return Inbox(
        local_users=local,
        rules=rules,
        rooms=RoomRegistry(local),
        release=ReleaseOrder(),
        directory=HomeDirectory(local_users=local),
        relay_ttl_ms=60_000,
        sibling_destinations=lambda: siblings,
        opener=opener,
        sent=sent,
    )


def statuses(results: list[DeliveryResult]) -> list[tuple[AckStatus, int]]:
    return [(r.status, r.code) for r in results]


STORED, DUPLICATE = (AckStatus.STORED, 0), (AckStatus.DUPLICATE, 0)


def test_a_batch_that_creates_a_group_admits_each_item_by_the_ones_before(
    store: KvStore,
) -> None:
    inbox = make_inbox()
    early = sealed(MEMBER, 1)
    batch = [
        early,  # before the CREATE: may not write yet
        change(1, Action.CREATE, ADMIN),
        change(2, Action.ADD, OURS),
        change(3, Action.ADD, MEMBER),
        sealed(MEMBER, 2),  # after its ADD, in the same batch
    ]
    outcome = inbox.accept(store, [arrival(e) for e in batch], now_ms=0, peer=PEER)
    deferred = (AckStatus.DEFERRED, ErrorCode.NOT_AUTHORIZED)
    assert statuses(outcome.results) == [deferred, STORED, STORED, STORED, STORED]
    assert [r.message_id for r in outcome.results] == [e.message_id for e in batch]
    assert outcome.membership_changed == {GROUP}
    assert {m.user for m in store.members(GROUP)} == {uid(ADMIN), uid(OURS), uid(MEMBER)}
    # a group joined later starts each sender at the first number brought
    assert [e.message_id for e in outcome.released] == [e.message_id for e in batch[1:]]
    again = inbox.accept(store, [arrival(e) for e in batch[1:]], now_ms=0, peer=PEER)
    assert statuses(again.results) == [DUPLICATE] * 4
    assert again.released == [] and again.membership_changed == set()


def test_another_event_in_the_same_slot_is_rejected_and_a_decided_result_keeps_its_place(
    store: KvStore,
) -> None:
    inbox = make_inbox()
    setup = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    inbox.accept(store, [arrival(e) for e in setup], now_ms=0, peer=PEER)
    first = sealed(ADMIN, 3, wall_ms=5_000, body=b"one")
    rival = sealed(ADMIN, 3, wall_ms=5_000, body=b"two")  # same (room, hlc, device, seq)
    skewed = DeliveryResult(
        message_id=MessageId(b"s" * 32), status=AckStatus.DEFERRED, code=ErrorCode.CLOCK_SKEW
    )
    typing = sealed(ADMIN, 1, kind=Kind.TYPING)
    items: list[Arrival | DeliveryResult] = [
        arrival(first),
        skewed,
        arrival(rival),
        arrival(typing),
    ]
    outcome = inbox.accept(store, items, now_ms=0, peer=PEER)
    rejected = (AckStatus.REJECTED, ErrorCode.PROTOCOL)
    assert statuses(outcome.results) == [
        STORED,
        (AckStatus.DEFERRED, ErrorCode.CLOCK_SKEW),
        rejected,
        rejected,
    ]
    assert outcome.results[1] is skewed


def test_an_envelope_for_another_user_is_relayed_within_its_quota(store: KvStore) -> None:
    inbox = make_inbox()
    one, two = sealed(MEMBER, 1), sealed(MEMBER, 2)
    outcome = inbox.accept(store, [arrival(one, ABSENT), arrival(two, ABSENT)], now_ms=0, peer=PEER)
    assert statuses(outcome.results) == [
        (AckStatus.RELAYED, 0),
        (AckStatus.DEFERRED, ErrorCode.QUOTA_EXCEEDED),  # max_count=1 per recipient
    ]
    assert outcome.relayed_for == {uid(ABSENT)}
    assert outcome.released == []


def test_a_block_from_our_other_device_holds_here_and_drops_what_the_user_sends(
    store: KvStore,
) -> None:
    """SPEC §32.3: the PRIVATE change blocks here too (and after a restart); the blocked user's
    next envelope is answered STORED and nothing of it is kept."""
    local = {uid(OURS)}
    privacy = Privacy()
    inbox = Inbox(
        local_users=local,
        rules=ArrivalRules(local, blocked=privacy.blocks),
        rooms=RoomRegistry(local),
        release=ReleaseOrder(),
        directory=HomeDirectory(local_users=local),
        relay_ttl_ms=60_000,
        sibling_destinations=tuple,
        opener=None,
        privacy=privacy,
    )
    blocked = uid(ADMIN)
    block = seal(
        OURS,
        kind=Kind.PRIVATE,
        room=self_room_id(uid(OURS)),
        sender_user=uid(OURS),
        seq=1,
        hlc=Timestamp(wall_ms=next(_wall), counter=0),
        content_type=PRIVATE_CONTENT_TYPE,
        body=encode_block_changed(blocked, blocked=True),
    )
    outcome = inbox.accept(store, [arrival(block)], now_ms=1, peer=PEER)
    assert statuses(outcome.results) == [STORED] and privacy.blocks(blocked)
    again = Privacy()
    again.load(store)
    assert again.blocks(blocked)  # kept in the store, not only in memory
    hello = seal(
        ADMIN,
        kind=Kind.MESSAGE,
        room=direct_room_id(uid(OURS), blocked),
        sender_user=blocked,
        seq=1,
        hlc=Timestamp(wall_ms=next(_wall), counter=0),
        content_type="text/plain",
        body=b"let me in",
    )
    outcome = inbox.accept(store, [arrival(hello)], now_ms=2, peer=PEER)
    assert statuses(outcome.results) == [STORED]  # as if stored: nothing tells them
    assert store.get_event(hello.message_id) is None and outcome.released == []


def receipt_of(who: KeyPair, seq: int, *named: Envelope) -> Envelope:
    """`who`'s sequenced (broadcast form) receipt: DELIVERED for `named`."""
    ids = tuple(e.message_id for e in named)
    body = encode_receipt(Receipt(status=ReceiptStatus.DELIVERED, message_ids=ids))
    return sealed(who, seq, kind=Kind.RECEIPT, body=body, content_type=RECEIPT_CONTENT_TYPE)


def delivered_to(store: KvStore, message: Envelope) -> dict[bytes, int]:
    return {r.recipient: int(r.status) for r in store.statuses(message.message_id)}


def test_a_receipt_credits_our_message_stored_earlier_in_its_own_batch(store: KvStore) -> None:
    """The credit takes a named message its refusal did not find yet (SPEC §16.3)."""
    inbox = make_inbox()
    setup = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    setup.append(change(3, Action.ADD, MEMBER))
    inbox.accept(store, [arrival(e) for e in setup], now_ms=0, peer=PEER)
    ours = sealed(OURS, 1)  # from our other device, with the receipt for it behind it
    batch = [ours, receipt_of(MEMBER, 1, ours)]
    outcome = inbox.accept(store, [arrival(e) for e in batch], now_ms=0, from_sibling=True)
    assert statuses(outcome.results) == [STORED, STORED]
    assert delivered_to(store, ours) == {uid(MEMBER): ReceiptStatus.DELIVERED}


class _CountingStore(MemoryStore):
    """A real store that counts the events read by message id."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[bytes] = []

    def get_events(
        self, message_ids: Iterable[bytes], *, in_hand: Mapping[bytes, Envelope] | None = None
    ) -> dict[MessageId, StoredEvent]:
        message_ids = list(message_ids)
        self.reads += message_ids
        return super().get_events(message_ids, in_hand=in_hand)


def test_a_receipt_reads_each_message_it_names_once_for_its_refusal_and_credit() -> None:
    """Decoding the named envelopes was most of a receipt's cost: read once, not per use."""
    store = _CountingStore()
    inbox = make_inbox()
    setup = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    setup.append(change(3, Action.ADD, MEMBER))
    inbox.accept(store, [arrival(e) for e in setup], now_ms=0, peer=PEER)
    ours = [sealed(OURS, 1), sealed(OURS, 2)]
    inbox.accept(store, [arrival(e) for e in ours], now_ms=0, from_sibling=True)
    store.reads.clear()
    outcome = inbox.accept(store, [arrival(receipt_of(MEMBER, 1, *ours))], now_ms=0, peer=PEER)
    assert statuses(outcome.results) == [STORED]
    assert sorted(store.reads) == sorted(e.message_id for e in ours)
    assert all(delivered_to(store, e) == {uid(MEMBER): ReceiptStatus.DELIVERED} for e in ours)


def test_a_batch_tells_the_log_entries_it_made_as_the_log_reads_them(store: KvStore) -> None:
    """`StoreOutcome.logged` (a client feed publishes from it, not the log): each stored
    envelope's entry with its number and cursor as the log reads them back, the arrival's own
    envelope object, nothing for a duplicate."""
    inbox = make_inbox()
    before = store.last_arrival()
    batch = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS), sealed(ADMIN, 3)]
    first = inbox.accept(store, [arrival(e) for e in batch], now_ms=0, peer=PEER, log=True)
    later = sealed(ADMIN, 4)
    again = inbox.accept(store, [arrival(batch[2]), arrival(later)], now_ms=0, peer=PEER, log=True)
    assert first.logged is not None and again.logged is not None
    told = first.logged + again.logged
    assert told == list(store.arrivals_after(before, limit=10).entries)
    assert all(a.event.envelope is b for a, b in zip(told, [*batch, later], strict=True))


class _NoEntries(MemoryStore):
    """A store whose appends must not build arrival-log entries."""

    def append_entries(
        self, requests: Sequence[AppendRequest]
    ) -> list[tuple[AppendResult, FeedEntry | None]]:
        raise AssertionError("entries built with no feed to take them")


def test_a_batch_no_feed_asked_for_builds_no_log_entries() -> None:
    """A node with no client feed (`log` False: no subscriber takes `Logged`) stores with
    `append_many` and tells nothing: the feed's entries cost it nothing."""
    store = _NoEntries()
    outcome = make_inbox().accept(
        store, [arrival(change(1, Action.CREATE, ADMIN))], now_ms=0, peer=PEER
    )
    assert statuses(outcome.results) == [STORED]
    assert outcome.logged is None


def test_a_batch_that_queued_entries_for_our_siblings_says_so_released_or_held_back(
    store: KvStore,
) -> None:
    """`queued_for_siblings` is what wakes the sleeping outbox (`AfterStore`): an envelope held
    back behind a gap gets its entries for our other homes as a released one does; one our
    sibling sent us gets none (it sent them to every sibling itself, ARCHITECTURE §8)."""
    sibling = node_destination("12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7")
    inbox = make_inbox(siblings=(sibling,))
    made = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    assert inbox.accept(store, [arrival(e) for e in made], now_ms=0, peer=PEER).queued_for_siblings
    held_back = inbox.accept(store, [arrival(sealed(ADMIN, 4))], now_ms=0, peer=PEER)  # 3 missing
    assert statuses(held_back.results) == [STORED] and held_back.released == []
    assert held_back.queued_for_siblings
    due = store.take_due(now_ms=1, limit=10, lease_ms=1000)
    assert {e.destination for e in due} == {sibling} and len(due) == 3
    theirs = inbox.accept(
        store, [arrival(sealed(ADMIN, 5))], now_ms=0, peer=PEER, from_sibling=True
    )
    assert statuses(theirs.results) == [STORED] and not theirs.queued_for_siblings
