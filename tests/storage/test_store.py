"""The storage contract: every test runs on the in-memory twin and on LMDB (`store` fixture)."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, MediaRef, encode_media
from hearthmesh.protocol.envelope import Envelope, Kind
from hearthmesh.protocol.errors import LocalProtocolError, MalformedMessage, StorageError
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.media_seal import TAG_BYTES, MediaSeal
from hearthmesh.storage.api import (
    RETENTION_MS,
    RETENTION_SETTING,
    AppendRequest,
    AppendResult,
    ClientRecord,
    Cursor,
    DeliveryStatus,
    Direction,
    StoredEvent,
    Trust,
)
from hearthmesh.storage.store import KvStore

from .helpers import PEER, ROOM_A, ROOM_B, USER_A, USER_B, device, make_envelope

DEST_1 = b"peer-one"
DEST_2 = b"peer-two"


def ids(events: tuple[StoredEvent, ...] | list[StoredEvent]) -> list[bytes]:
    return [e.envelope.message_id for e in events]


# --- append and dedupe ---------------------------------------------------------------------


def test_append_then_duplicate_changes_nothing(store: KvStore) -> None:
    store.add_member(ROOM_A, USER_A, role=0, local=True, now_ms=10)
    env = make_envelope(wall_ms=500)
    request = AppendRequest(envelope=env, outbox_to=(DEST_1,), next_attempt_ms=100)
    assert store.append(request) is AppendResult.STORED
    before = store.conversations(USER_A, page_size=10)
    assert store.append(request) is AppendResult.DUPLICATE
    assert store.append(AppendRequest(envelope=env, outbox_to=(DEST_2,))) is AppendResult.DUPLICATE
    assert store.conversations(USER_A, page_size=10) == before
    taken = store.take_due(now_ms=10**9, limit=10, lease_ms=1)
    assert [(e.destination, e.message_id) for e in taken] == [(DEST_1, env.message_id)]
    stored = store.get_event(env.message_id)
    assert stored is not None
    assert stored.envelope == env
    assert stored.envelope.wire == env.wire


def test_conflicting_slot_is_reported_and_not_stored(store: KvStore) -> None:
    first = make_envelope(body=b"one")
    second = make_envelope(body=b"two")  # same room, hlc, device, seq; another id
    assert store.append(AppendRequest(envelope=first)) is AppendResult.STORED
    assert store.append(AppendRequest(envelope=second, outbox_to=(DEST_1,))) is (
        AppendResult.CONFLICT
    )
    assert store.get_event(second.message_id) is None
    assert store.take_due(now_ms=10**9, limit=10, lease_ms=1) == []
    page = store.page_history(ROOM_A, direction=Direction.FORWARD)
    assert ids(page.events) == [first.message_id]


def test_ephemeral_kinds_are_never_stored(store: KvStore) -> None:
    with pytest.raises(LocalProtocolError):
        store.append(AppendRequest(envelope=make_envelope(kind=Kind.TYPING)))


def test_append_many_is_one_transaction_with_results_in_order(store: KvStore) -> None:
    a, b = make_envelope(seq=1), make_envelope(seq=2, wall_ms=1_001)
    results = store.append_many(
        [AppendRequest(envelope=a), AppendRequest(envelope=b), AppendRequest(envelope=a)]
    )
    assert results == [AppendResult.STORED, AppendResult.STORED, AppendResult.DUPLICATE]


def test_failed_write_changes_nothing(store: KvStore) -> None:
    good = make_envelope(seq=1)
    bad = AppendRequest(envelope=make_envelope(seq=2, wall_ms=2_000), outbox_to=(b"",))
    with pytest.raises(LocalProtocolError):
        store.append_many([AppendRequest(envelope=good, outbox_to=(DEST_1,)), bad])
    assert store.get_event(good.message_id) is None
    assert store.take_due(now_ms=10**9, limit=10, lease_ms=1) == []
    assert store.append(AppendRequest(envelope=good)) is AppendResult.STORED


def test_a_batch_commits_once_and_undoes_a_failing_call_alone(store: KvStore) -> None:
    a, b = make_envelope(seq=1), make_envelope(seq=2, wall_ms=1_001)

    def fails_after_writing() -> None:
        store.set_setting("half-done", b"x")
        raise StorageError("this call fails")

    outcomes = store.run_batch(
        [
            lambda: store.append(AppendRequest(envelope=a, outbox_to=(DEST_1,))),
            fails_after_writing,
            lambda: store.get_event(a.message_id) is not None,  # sees the call before it
            lambda: store.append(AppendRequest(envelope=b)),
        ]
    )
    assert [o.value for o in outcomes] == [AppendResult.STORED, None, True, AppendResult.STORED]
    assert isinstance(outcomes[1].error, StorageError)
    assert store.get_setting("half-done") is None
    assert store.get_event(a.message_id) is not None
    assert store.get_event(b.message_id) is not None
    assert len(store.take_due(now_ms=10**9, limit=10, lease_ms=1)) == 1


def test_a_snapshot_reads_and_refuses_writes(store: KvStore) -> None:
    store.set_setting("name", b"v")
    assert store.snapshot(lambda: store.get_setting("name")) == b"v"
    with pytest.raises(LocalProtocolError, match="read-only"):
        store.snapshot(lambda: store.set_setting("name", b"w"))
    assert store.get_setting("name") == b"v"


# --- history pages -------------------------------------------------------------------------


def _fill(store: KvStore) -> list[bytes]:
    """25 events in ROOM_A (two devices sharing wall times) and noise in ROOM_B."""
    envelopes = []
    for i in range(25):
        envelopes.append(make_envelope(seq=i + 1, wall_ms=1_000 + i // 2, device_index=1 + i % 2))
    store.append_many([AppendRequest(envelope=e) for e in reversed(envelopes)])
    store.append(AppendRequest(envelope=make_envelope(ROOM_B, wall_ms=1_005)))
    ordered = sorted(envelopes, key=lambda e: e.order_key)
    return [e.message_id for e in ordered]


def test_history_is_ordered_by_hlc_then_sender_device_then_seq(store: KvStore) -> None:
    """SPEC §4.5.1, spelt out rather than through `Envelope.order_key`: the HLC (wall time,
    then counter) first, then the sender device's id bytes, then the sequence number."""
    low, high = sorted((1, 2), key=lambda index: device(index).public)
    expected = [
        make_envelope(wall_ms=999, counter=9, device_index=high, seq=9),
        make_envelope(wall_ms=1_000, counter=0, device_index=high, seq=10),
        make_envelope(wall_ms=1_000, counter=1, device_index=low, seq=1),
        make_envelope(wall_ms=1_000, counter=1, device_index=high, seq=11),
        make_envelope(wall_ms=1_000, counter=1, device_index=high, seq=12),
    ]
    store.append_many([AppendRequest(envelope=e) for e in reversed(expected)])
    page = store.page_history(ROOM_A, direction=Direction.FORWARD, cursor=None, limit=10)
    assert ids(page.events) == [e.message_id for e in expected]


@pytest.mark.parametrize("direction", [Direction.FORWARD, Direction.BACKWARD])
def test_pages_walk_the_whole_room_in_history_order(store: KvStore, direction: Direction) -> None:
    expected = _fill(store)
    seen: list[list[bytes]] = []
    cursor: Cursor | None = None
    while True:
        page = store.page_history(ROOM_A, direction=direction, cursor=cursor, limit=10)
        seen.append(ids(page.events))
        if page.next is None:
            break
        cursor = page.next
    if direction is Direction.BACKWARD:
        seen.reverse()
    assert [len(p) for p in seen] == (
        [5, 10, 10] if direction is Direction.BACKWARD else [10, 10, 5]
    )
    assert [m for p in seen for m in p] == expected


def test_page_from_an_event_cursor_is_exclusive(store: KvStore) -> None:
    expected = _fill(store)
    middle = store.get_event(expected[12])
    assert middle is not None
    after = store.page_history(ROOM_A, direction=Direction.FORWARD, cursor=middle.cursor, limit=3)
    before = store.page_history(ROOM_A, direction=Direction.BACKWARD, cursor=middle.cursor, limit=3)
    assert ids(after.events) == expected[13:16]
    assert ids(before.events) == expected[9:12]


def test_empty_room_and_bad_page_arguments(store: KvStore) -> None:
    page = store.page_history(ROOM_B, direction=Direction.BACKWARD)
    assert page.events == () and page.next is None
    with pytest.raises(MalformedMessage):
        store.page_history(ROOM_A, direction=Direction.FORWARD, cursor=Cursor(b"nope"))
    with pytest.raises(LocalProtocolError):
        store.page_history(ROOM_A, direction=Direction.FORWARD, limit=0)


# --- status --------------------------------------------------------------------------------


def test_set_statuses_is_one_call_with_a_result_each(store: KvStore) -> None:
    env = make_envelope()
    store.append(AppendRequest(envelope=env))
    first = store.set_statuses(
        [
            (env.message_id, USER_B, DeliveryStatus.DELIVERED),
            (b"\x00" * 32, USER_B, DeliveryStatus.READ),
        ],
        now_ms=5,
    )
    assert first == [True, False]
    again = store.set_statuses([(env.message_id, USER_B, DeliveryStatus.SENT)], now_ms=6)
    assert again == [False]
    assert [r.status for r in store.statuses(env.message_id)] == [DeliveryStatus.DELIVERED]


def test_status_only_moves_forward(store: KvStore) -> None:
    env = make_envelope()
    store.append(AppendRequest(envelope=env))
    mid = env.message_id
    assert store.set_status(mid, USER_B, DeliveryStatus.DELIVERED, now_ms=5)
    assert not store.set_status(mid, USER_B, DeliveryStatus.SENT, now_ms=6)
    assert store.set_status(mid, USER_B, DeliveryStatus.READ, now_ms=7)
    assert store.set_status(mid, USER_A, DeliveryStatus.SENT, now_ms=8)
    assert [(s.recipient, s.status, s.updated_ms) for s in store.statuses(mid)] == [
        (USER_A, DeliveryStatus.SENT, 8),
        (USER_B, DeliveryStatus.READ, 7),
    ]
    assert not store.set_status(b"\x00" * 32, USER_B, DeliveryStatus.READ, now_ms=9)


# --- outbox --------------------------------------------------------------------------------


def test_outbox_take_lease_ack_reschedule(store: KvStore) -> None:
    a, b = make_envelope(seq=1), make_envelope(seq=2, wall_ms=1_001)
    store.append(AppendRequest(envelope=a, outbox_to=(DEST_1, DEST_2), next_attempt_ms=100))
    store.append(AppendRequest(envelope=b, outbox_to=(DEST_1,), next_attempt_ms=50))
    assert store.take_due(now_ms=49, limit=10, lease_ms=1_000) == []
    first = store.take_due(now_ms=100, limit=2, lease_ms=1_000)
    assert [(e.message_id, e.destination) for e in first] == [
        (b.message_id, DEST_1),
        (a.message_id, DEST_1),
    ]
    assert all(e.attempts == 1 and e.next_attempt_ms == 1_100 for e in first)
    assert first[0].wire == b.wire
    rest = store.take_due(now_ms=100, limit=10, lease_ms=1_000)
    assert [(e.message_id, e.destination) for e in rest] == [(a.message_id, DEST_2)]
    assert store.ack(DEST_1, b.message_id)
    assert not store.ack(DEST_1, b.message_id)
    assert store.reschedule(DEST_1, a.message_id, next_attempt_ms=300, error="unreachable")
    assert not store.reschedule(DEST_1, b.message_id, next_attempt_ms=300, error=None)
    again = store.take_due(now_ms=300, limit=10, lease_ms=10)
    assert [(e.destination, e.attempts, e.last_error) for e in again] == [
        (DEST_1, 2, "unreachable")
    ]
    leased_out = store.take_due(now_ms=1_100, limit=10, lease_ms=10)
    assert [(e.destination, e.attempts) for e in leased_out] == [(DEST_1, 3), (DEST_2, 2)]


def test_next_due_is_the_earliest_queued_entry_leased_or_rescheduled_not_parked(
    store: KvStore,
) -> None:
    assert store.next_due_ms() is None
    a, b = make_envelope(seq=1), make_envelope(seq=2, wall_ms=1_001)
    store.append(AppendRequest(envelope=a, outbox_to=(DEST_1,), next_attempt_ms=100))
    store.append(AppendRequest(envelope=b, outbox_to=(DEST_2,), next_attempt_ms=70))
    assert store.next_due_ms() == 70
    store.take_due(now_ms=70, limit=10, lease_ms=1_000)  # b leased until 1_070
    assert store.next_due_ms() == 100
    store.reschedule(DEST_2, b.message_id, next_attempt_ms=90, error=None)
    assert store.next_due_ms() == 90
    store.park_many(DEST_2, [b.message_id])
    assert store.next_due_ms() == 100
    store.ack(DEST_1, a.message_id)
    assert store.next_due_ms() is None


def test_outbox_ack_and_reschedule_many_in_one_call(store: KvStore) -> None:
    envelopes = [make_envelope(seq=i, wall_ms=1_000 + i) for i in range(1, 5)]
    for env in envelopes:
        store.append(AppendRequest(envelope=env, outbox_to=(DEST_1,), next_attempt_ms=0))
    ids_ = [e.message_id for e in envelopes]
    assert store.ack_many(DEST_1, [ids_[0], ids_[1], b"\x00" * 32]) == 2
    assert store.reschedule_many(DEST_1, [(ids_[2], 500), (ids_[0], 500)], error="later") == 1
    due = store.take_due(now_ms=0, limit=10, lease_ms=1)
    assert [e.message_id for e in due] == [ids_[3]]
    later = store.take_due(now_ms=500, limit=10, lease_ms=1)  # ids_[3]'s lease ran out too
    assert {(e.message_id, e.last_error) for e in later} == {(ids_[2], "later"), (ids_[3], None)}


def test_enqueue_many_is_one_call_and_skips_pending(store: KvStore) -> None:
    envelopes = [make_envelope(seq=i, wall_ms=1_000 + i) for i in range(1, 4)]
    for env in envelopes:
        store.append(AppendRequest(envelope=env))
    plan = [(e.message_id, 10 + i) for i, e in enumerate(envelopes)]
    assert store.enqueue_many(DEST_1, plan) == 3
    assert store.enqueue_many(DEST_1, plan[:1]) == 0
    due = store.take_due(now_ms=20, limit=10, lease_ms=1_000)  # leased until 1_020
    assert [e.message_id for e in due] == [e.message_id for e in envelopes]
    assert store.enqueue_many(DEST_1, [(envelopes[0].message_id, 30)]) == 0  # sooner, please
    assert [e.message_id for e in store.take_due(now_ms=30, limit=10, lease_ms=1)] == [
        envelopes[0].message_id
    ]


def test_a_down_destinations_entries_park_in_order_and_come_back_due(store: KvStore) -> None:
    envelopes = [make_envelope(seq=i, wall_ms=1_000 + i) for i in range(1, 6)]
    for i, env in enumerate(envelopes):
        store.append(
            AppendRequest(envelope=env, outbox_to=(DEST_1, DEST_2), next_attempt_ms=10 + i)
        )
    ids_ = [e.message_id for e in envelopes]
    assert store.park_many(DEST_1, [ids_[3], ids_[0], ids_[1], ids_[2], b"\x00" * 32]) == 4
    assert store.park_many(DEST_1, ids_[:2]) == 0  # parked already
    assert store.parked_destinations() == [DEST_1]
    due = store.take_due(now_ms=100, limit=10, lease_ms=1_000)  # parked ones are not handed out
    assert sorted((e.destination, e.message_id) for e in due) == sorted(
        [(DEST_1, ids_[4])] + [(DEST_2, m) for m in ids_]
    )
    assert store.ack(DEST_1, ids_[1])  # an ack (e.g. a late one) finds a parked entry
    assert store.unpark(DEST_1, now_ms=200, limit=2) == 2  # oldest first
    back = store.take_due(now_ms=200, limit=10, lease_ms=1_000)
    assert [e.message_id for e in back] == [ids_[0], ids_[2]]
    assert store.reschedule(DEST_1, ids_[3], next_attempt_ms=300, error="probe")  # unparks
    assert store.parked_destinations() == []
    assert [
        (e.message_id, e.last_error) for e in store.take_due(now_ms=300, limit=10, lease_ms=1)
    ] == [(ids_[3], "probe")]


def test_enqueue_many_puts_a_parked_entry_back_in_the_queue(store: KvStore) -> None:
    envelope = make_envelope()
    store.append(AppendRequest(envelope=envelope, outbox_to=(DEST_1,), next_attempt_ms=10))
    assert store.park_many(DEST_1, [envelope.message_id]) == 1
    assert store.enqueue_many(DEST_1, [(envelope.message_id, 50)]) == 0  # pending already
    assert [e.message_id for e in store.take_due(now_ms=50, limit=10, lease_ms=1)] == [
        envelope.message_id
    ]
    assert store.parked_destinations() == []


def test_last_seq_follows_each_device_in_each_room(store: KvStore) -> None:
    assert store.last_seq(ROOM_A, make_envelope().sender_device) == 0
    for seq in (1, 3, 2):
        store.append(AppendRequest(envelope=make_envelope(seq=seq, wall_ms=1_000 + seq)))
    store.append(AppendRequest(envelope=make_envelope(ROOM_B, seq=7)))
    store.append(AppendRequest(envelope=make_envelope(seq=9, device_index=2)))
    device = make_envelope().sender_device
    assert store.last_seq(ROOM_A, device) == 3
    assert store.last_seq(ROOM_B, device) == 7
    assert store.last_seq(ROOM_A, make_envelope(device_index=2).sender_device) == 9


def test_sender_events_finds_one_senders_numbers_in_a_room(store: KvStore) -> None:
    """SPEC §26: the events of one device in one room by sequence number, in seq order,
    whatever their HLC order; other rooms, other devices and missing numbers are left out."""
    device = make_envelope().sender_device
    mine = {seq: make_envelope(seq=seq, wall_ms=5_000 - seq) for seq in (1, 2, 4, 5, 300)}
    store.append_many([AppendRequest(envelope=e) for e in mine.values()])
    store.append(AppendRequest(envelope=make_envelope(ROOM_B, seq=3)))
    store.append(AppendRequest(envelope=make_envelope(seq=3, device_index=2)))
    assert ids(store.sender_events(ROOM_A, device, 2, 5)) == [
        mine[seq].message_id for seq in (2, 4, 5)
    ]
    assert ids(store.sender_events(ROOM_A, device, 3, 3)) == []
    assert ids(store.sender_events(ROOM_A, device, 45, 300)) == [mine[300].message_id]
    assert store.sender_events(ROOM_B, device, 1, 256)[0].envelope.seq == 3
    for first, last in ((0, 1), (5, 4), (1, 257)):
        with pytest.raises(LocalProtocolError):
            store.sender_events(ROOM_A, device, first, last)


def test_sender_events_keep_the_first_event_of_a_number_and_forget_purged_ones(
    store: KvStore,
) -> None:
    device = make_envelope().sender_device
    first = make_envelope(seq=1, wall_ms=10)
    twin = make_envelope(seq=1, wall_ms=20, body=b"the same number again")
    later = make_envelope(seq=2, wall_ms=10**9)
    for envelope in (first, twin, later):
        assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    assert ids(store.sender_events(ROOM_A, device, 1, 2)) == [first.message_id, later.message_id]
    store.purge(now_ms=10**9, retention_ms=10**9 - 15)  # removes `first` (wall 10) only
    assert ids(store.sender_events(ROOM_A, device, 1, 2)) == [later.message_id]
    store.purge(now_ms=10**9, retention_ms=1)
    assert ids(store.sender_events(ROOM_A, device, 1, 2)) == [later.message_id]


def test_enqueue_refers_to_stored_messages_only(store: KvStore) -> None:
    env = make_envelope()
    with pytest.raises(LocalProtocolError):
        store.enqueue(DEST_1, env.message_id, next_attempt_ms=0)
    store.append(AppendRequest(envelope=env))
    assert store.enqueue(DEST_1, env.message_id, next_attempt_ms=0)
    assert not store.enqueue(DEST_1, env.message_id, next_attempt_ms=5)
    assert len(store.take_due(now_ms=0, limit=10, lease_ms=1)) == 1


# --- relay inbox ---------------------------------------------------------------------------


def test_relay_put_take_ack(store: KvStore) -> None:
    a, b = make_envelope(seq=1), make_envelope(seq=2, wall_ms=1_001)
    assert store.relay_put(USER_B, a, peer=PEER, known=True, now_ms=0, ttl_ms=100)
    assert store.relay_put(USER_B, b, peer=PEER, known=True, now_ms=1, ttl_ms=100)
    assert not store.relay_put(USER_B, a, peer=PEER, known=True, now_ms=2, ttl_ms=100)
    taken = store.relay_take(USER_B, now_ms=50, limit=10)
    assert [(e.message_id, e.wire, e.expires_ms) for e in taken] == [
        (a.message_id, a.wire, 100),
        (b.message_id, b.wire, 101),
    ]
    assert store.relay_take(USER_A, now_ms=50, limit=10) == []
    assert store.relay_ack(USER_B, [a.message_id, b"\x00" * 32]) == 1
    assert [e.message_id for e in store.relay_take(USER_B, now_ms=50, limit=10)] == [b.message_id]
    usage = store.relay_usage(USER_B)
    assert (usage.count, usage.bytes) == (1, len(b.wire))


def test_relay_recipients_lists_who_holds_envelopes(store: KvStore) -> None:
    assert store.relay_recipients() == []
    env = make_envelope()
    store.relay_put(USER_B, env, peer=PEER, known=True, now_ms=0, ttl_ms=100)
    store.relay_put(USER_A, make_envelope(seq=2), peer=PEER, known=True, now_ms=0, ttl_ms=100)
    assert sorted(store.relay_recipients()) == sorted([USER_A, USER_B])
    store.relay_ack(USER_B, [env.message_id])
    assert store.relay_recipients() == [USER_A]


def test_relay_quota_refuses_and_drops_nothing(store: KvStore) -> None:
    from hearthmesh.protocol.errors import QuotaExceeded

    held = [make_envelope(seq=i, wall_ms=1_000 + i) for i in range(1, 4)]
    for env in held:
        store.relay_put(USER_B, env, peer=PEER, known=True, now_ms=0, ttl_ms=1_000)
    with pytest.raises(QuotaExceeded, match=USER_B.hex()):
        store.relay_put(
            USER_B,
            make_envelope(seq=9, wall_ms=2_000),
            peer=PEER,
            known=True,
            now_ms=0,
            ttl_ms=1_000,
        )
    assert [e.message_id for e in store.relay_take(USER_B, now_ms=0, limit=10)] == [
        e.message_id for e in held
    ]
    big = make_envelope(body=b"x" * 5_000)
    with pytest.raises(QuotaExceeded):
        store.relay_put(USER_A, big, peer=PEER, known=True, now_ms=0, ttl_ms=1_000)
    assert store.relay_usage(USER_A).count == 0


def test_relay_entries_expire(store: KvStore) -> None:
    a, b = make_envelope(seq=1), make_envelope(seq=2, wall_ms=1_001)
    store.relay_put(USER_B, a, peer=PEER, known=True, now_ms=0, ttl_ms=10)
    store.relay_put(USER_B, b, peer=PEER, known=True, now_ms=0, ttl_ms=1_000)
    assert [e.message_id for e in store.relay_take(USER_B, now_ms=10, limit=5)] == [b.message_id]
    report = store.purge(now_ms=10, retention_ms=10**12)
    assert report.relay_entries == 1
    assert store.relay_usage(USER_B).count == 1
    assert store.relay_put(USER_B, a, peer=PEER, known=True, now_ms=20, ttl_ms=10)


# --- rooms and conversations ---------------------------------------------------------------


def test_members_in_both_directions(store: KvStore) -> None:
    store.add_member(ROOM_A, USER_A, role=2, local=True, now_ms=1)
    store.add_member(ROOM_A, USER_B, role=0, local=False, now_ms=2)
    store.add_member(ROOM_B, USER_B, role=0, local=False, now_ms=3)
    assert [(m.user, m.role, m.joined_ms, m.local) for m in store.members(ROOM_A)] == [
        (USER_A, 2, 1, True),
        (USER_B, 0, 2, False),
    ]
    assert store.rooms_of(USER_B) == [ROOM_A, ROOM_B]
    assert store.remove_member(ROOM_A, USER_B)
    assert not store.remove_member(ROOM_A, USER_B)
    assert store.rooms_of(USER_B) == [ROOM_B]
    assert [c.room for c in store.conversations(USER_A, page_size=5).items] == [ROOM_A]
    assert store.conversations(USER_B, page_size=5).items == ()


def test_conversations_follow_latest_activity_and_page(store: KvStore) -> None:
    rooms = [bytes([i]) * 32 for i in range(1, 8)]
    for i, room in enumerate(rooms):
        store.add_member(room, USER_A, role=0, local=True, now_ms=100 + i)
    # A message in rooms[2] makes it the most recent; an older backfill does not lower it.
    latest = make_envelope(rooms[2], wall_ms=5_000)
    store.append(AppendRequest(envelope=latest))
    store.append(AppendRequest(envelope=make_envelope(rooms[2], wall_ms=50, seq=2)))
    first = store.conversations(USER_A, page_size=3, page_number=1)
    assert [c.room for c in first.items] == [rooms[2], rooms[6], rooms[5]]
    assert first.has_more
    assert first.items[0].latest is not None
    assert first.items[0].latest.envelope.message_id == latest.message_id
    assert first.items[0].latest_activity == Timestamp(5_000, 0)
    assert first.items[1].latest is None
    third = store.conversations(USER_A, page_size=3, page_number=3)
    assert [c.room for c in third.items] == [rooms[0]] and not third.has_more
    assert store.conversations(USER_A, page_size=3, page_number=4).items == ()
    with pytest.raises(LocalProtocolError):
        store.conversations(USER_A, page_size=0)


def test_delete_conversation_until_the_next_event(store: KvStore) -> None:
    store.add_member(ROOM_A, USER_A, role=0, local=True, now_ms=1)
    store.open_conversation(USER_B, ROOM_B, now_ms=2)
    assert store.delete_conversation(USER_A, ROOM_A)
    assert not store.delete_conversation(USER_A, ROOM_A)
    assert store.conversations(USER_A, page_size=5).items == ()
    store.append(AppendRequest(envelope=make_envelope(ROOM_A, wall_ms=9_000)))
    assert [c.room for c in store.conversations(USER_A, page_size=5).items] == [ROOM_A]
    assert [c.room for c in store.conversations(USER_B, page_size=5).items] == [ROOM_B]


# --- users, contacts, devices, push, sync, settings, media ---------------------------------


def test_profiles_and_handles(store: KvStore) -> None:
    from hearthmesh.storage.api import Profile

    profile = Profile(
        user=USER_A, handle="ann", display_name="Ann", avatar=None, bio="hi", updated_ms=1
    )
    store.put_profile(profile)
    store.put_profile(
        Profile(
            user=USER_B, handle="ann", display_name="B", avatar=b"\x01" * 32, bio="", updated_ms=2
        )
    )
    assert store.get_profile(USER_A) == profile
    assert store.find_handle("ann") == [USER_A, USER_B]
    store.put_profile(
        Profile(user=USER_A, handle="annie", display_name="Ann", avatar=None, bio="", updated_ms=3)
    )
    assert store.find_handle("ann") == [USER_B]
    assert store.find_handle("annie") == [USER_A]
    assert store.get_profile(b"\x00" * 32) is None
    with pytest.raises(LocalProtocolError):
        store.put_profile(
            Profile(
                user=USER_A, handle="a" * 600, display_name="", avatar=None, bio="", updated_ms=4
            )
        )


def test_contacts_and_friend_requests(store: KvStore) -> None:
    from hearthmesh.storage.api import FriendRequest

    request = FriendRequest(sender=USER_A, recipient=USER_B, created_ms=5, note="hi")
    assert store.put_friend_request(request)
    assert not store.put_friend_request(request)
    assert store.friend_requests(USER_B) == [request]
    assert store.accept_friend_request(USER_A, USER_B, now_ms=9)
    assert not store.accept_friend_request(USER_A, USER_B, now_ms=9)
    assert store.friend_requests(USER_B) == []
    assert [(c.contact, c.added_ms) for c in store.contacts(USER_A)] == [(USER_B, 9)]
    assert [(c.contact, c.added_ms) for c in store.contacts(USER_B)] == [(USER_A, 9)]
    assert store.remove_contact(USER_A, USER_B)
    assert store.contacts(USER_A) == []
    store.put_friend_request(request)
    assert store.delete_friend_request(USER_A, USER_B)
    assert store.friend_requests(USER_B) == []


def test_add_push_subscription_counts_and_writes_in_one_transaction(store: KvStore) -> None:
    """The API's cap on push endpoints (SPEC §15.6) holds: a full user gets False, no write."""
    from hearthmesh.storage.api import PushSubscription

    def sub(n: int, user: UserId = USER_A) -> PushSubscription:
        return PushSubscription(
            user=user, subscription_id=bytes([n]) * 16, data=b"{}", created_ms=n
        )

    assert [store.add_push_subscription(sub(n), 3) for n in range(1, 5)] == [True] * 3 + [False]
    assert [s.subscription_id[0] for s in store.push_subscriptions(USER_A)] == [1, 2, 3]
    assert store.add_push_subscription(sub(9, USER_B), 3)  # the cap is per user


def test_devices_push_sync_settings(store: KvStore) -> None:
    from hearthmesh.storage.api import NODE_KEY_SETTING, DeviceRecord, PushSubscription

    record = DeviceRecord(
        user=USER_A,
        device=DeviceId(b"\x0d" * 32),
        certificate=b"cert",
        e2ee_identity_key=b"k" * 32,
        added_ms=1,
        revoked_ms=None,
    )
    store.put_device(record)
    assert store.devices(USER_A) == [record]
    assert store.device_owner(b"\x0d" * 32) == USER_A
    with pytest.raises(LocalProtocolError):
        store.put_device(
            DeviceRecord(
                user=USER_B,
                device=DeviceId(b"\x0d" * 32),
                certificate=b"",
                e2ee_identity_key=b"",
                added_ms=2,
                revoked_ms=None,
            )
        )
    sub = PushSubscription(user=USER_A, subscription_id=b"sub1", data=b"{}", created_ms=3)
    store.put_push_subscription(sub)
    assert store.push_subscriptions(USER_A) == [sub]
    assert store.delete_push_subscription(USER_A, b"sub1")
    assert store.push_subscriptions(USER_A) == []
    assert store.get_sync_state(DEST_1, ROOM_A) is None
    store.set_sync_state(DEST_1, ROOM_A, b"token")
    assert store.get_sync_state(DEST_1, ROOM_A) == b"token"
    device = b"\x07" * 32
    assert store.release_progress(ROOM_A, device) is None
    store.set_release_progress(ROOM_A, device, 42)
    assert store.release_progress(ROOM_A, device) == 42
    assert store.release_progress(ROOM_B, device) is None  # per room
    assert store.get_sync_state(DEST_1, ROOM_A) == b"token"  # apart from peers' sync state
    # the layout stores written before it had a name hold: "release:" + device as the peer
    assert store.get_sync_state(b"release:" + device, ROOM_A) == (42).to_bytes(8, "big")
    store.set_setting(NODE_KEY_SETTING, b"\x01" * 32)
    assert store.get_setting(NODE_KEY_SETTING) == b"\x01" * 32


def test_media_is_content_addressed(store: KvStore) -> None:
    info = store.put_media(b"picture", content_type="image/png", now_ms=4)
    again = store.put_media(b"picture", content_type="image/jpeg", now_ms=9)
    assert again == info and info.size == 7
    assert store.media_info(info.digest) == info
    assert store.read_media(info.digest) == b"picture"
    assert store.delete_media(info.digest)
    assert store.read_media(info.digest) is None
    assert not store.delete_media(info.digest)


def test_media_references_are_indexed_with_the_append(store: KvStore) -> None:
    picture = MediaRef(type="image", digest=b"\x01" * 32, content_type="image/png", size=7)
    first = make_envelope(body=encode_media(picture), content_type=MEDIA_CONTENT_TYPE)
    again = make_envelope(seq=2, body=encode_media(picture), content_type=MEDIA_CONTENT_TYPE)
    elsewhere = make_envelope(
        ROOM_B, user=USER_B, body=encode_media(picture), content_type=MEDIA_CONTENT_TYPE
    )
    broken = make_envelope(seq=3, body=b"not cbor", content_type=MEDIA_CONTENT_TYPE)
    for envelope in (first, again, elsewhere, broken, make_envelope(seq=4, body=b"\x01" * 32)):
        assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    found = store.media_references(picture.digest)
    assert {(r.room, r.sender, r.size, r.content_type) for r in found} == {
        (ROOM_A, USER_A, 7, "image/png"),
        (ROOM_B, USER_B, 7, "image/png"),
    }
    assert store.media_references(b"\x02" * 32) == []
    # a refused append (a conflict) indexes nothing
    other = MediaRef(type="file", digest=b"\x03" * 32, content_type="text/csv", size=1)
    clash = make_envelope(body=encode_media(other), content_type=MEDIA_CONTENT_TYPE)
    assert store.append(AppendRequest(envelope=clash)) is AppendResult.CONFLICT
    assert store.media_references(other.digest) == []


def test_a_sealed_blob_keeps_its_seal_in_its_record_and_its_references(store: KvStore) -> None:
    seal = MediaSeal(key=b"k" * 32, nonce=b"n" * 12, plain_digest=b"p" * 32)
    info = store.put_media(b"ciphertext", content_type="image/png", now_ms=5, seal=seal)
    assert store.media_info(info.digest) == info and info.seal == seal
    plain = store.put_media(b"older blob", content_type="image/png", now_ms=6)
    assert store.media_info(plain.digest) == plain and plain.seal is None
    picture = MediaRef(
        type="image", digest=info.digest, content_type="image/png", size=7, seal=seal
    )
    envelope = make_envelope(body=encode_media(picture), content_type=MEDIA_CONTENT_TYPE)
    assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    [reference] = store.media_references(info.digest)
    assert (reference.size, reference.seal, reference.content_type) == (
        7 + TAG_BYTES,  # the blob's size: what the fetcher may receive (SPEC §28.1)
        seal,
        "image/png",
    )


# --- retention -----------------------------------------------------------------------------


def test_purge_keeps_what_the_outbox_needs(store: KvStore) -> None:
    day_ms = 24 * 3600 * 1000
    old_sent = make_envelope(seq=1, wall_ms=1_000)
    old_pending = make_envelope(seq=2, wall_ms=2_000)
    recent = make_envelope(seq=3, wall_ms=40 * day_ms)
    store.append(AppendRequest(envelope=old_sent, outbox_to=(DEST_1,)))
    store.append(AppendRequest(envelope=old_pending, outbox_to=(DEST_1,)))
    store.append(AppendRequest(envelope=recent))
    store.set_status(old_sent.message_id, USER_B, DeliveryStatus.READ, now_ms=1)
    store.ack(DEST_1, old_sent.message_id)
    report = store.purge(now_ms=31 * day_ms + 3_000)
    assert (report.events, report.kept_for_outbox) == (1, 1)
    assert store.get_event(old_sent.message_id) is None
    assert store.statuses(old_sent.message_id) == []
    assert store.get_event(old_pending.message_id) is not None
    assert [e.message_id for e in store.take_due(now_ms=0, limit=5, lease_ms=1)] == [
        old_pending.message_id
    ]
    page = store.page_history(ROOM_A, direction=Direction.FORWARD)
    assert ids(page.events) == [old_pending.message_id, recent.message_id]
    assert 30 * day_ms == RETENTION_MS


def test_purge_drops_the_media_references_only_purged_messages_made(store: KvStore) -> None:
    day_ms = 24 * 3600 * 1000
    picture = MediaRef(type="image", digest=b"\x01" * 32, content_type="image/png", size=7)

    def media(room: bytes, seq: int, wall_ms: int) -> Envelope:
        body = encode_media(picture)
        return make_envelope(
            room, seq=seq, wall_ms=wall_ms, body=body, content_type=MEDIA_CONTENT_TYPE
        )

    store.append_many(
        [
            AppendRequest(envelope=media(ROOM_A, 1, 1_000)),
            AppendRequest(envelope=media(ROOM_A, 2, 40 * day_ms)),  # still referenced in A
            AppendRequest(envelope=media(ROOM_B, 1, 1_000)),  # B's only reference
        ]
    )
    assert {r.room for r in store.media_references(picture.digest)} == {ROOM_A, ROOM_B}
    assert store.purge(now_ms=31 * day_ms).events == 2
    assert [r.room for r in store.media_references(picture.digest)] == [ROOM_A]
    store.purge(now_ms=80 * day_ms)
    assert store.media_references(picture.digest) == []


def test_purge_uses_the_retention_setting_and_limit(store: KvStore) -> None:
    store.append_many(
        [AppendRequest(envelope=make_envelope(ROOM_B, seq=i, wall_ms=i)) for i in range(1, 6)]
    )
    store.append(AppendRequest(envelope=make_envelope(ROOM_A, wall_ms=3)))
    store.set_setting(RETENTION_SETTING, b"100")
    assert store.purge(now_ms=103, limit=2).events == 2  # wall < 3: two of ROOM_A/B's old ones
    assert store.purge(now_ms=103, limit=2).events == 0
    assert store.purge(now_ms=1_000, limit=4).events == 4
    assert store.purge(now_ms=1_000).events == 0
    store.set_setting(RETENTION_SETTING, b"soon")
    with pytest.raises(StorageError, match=RETENTION_SETTING):
        store.purge(now_ms=1_000)


# --- lifetime ------------------------------------------------------------------------------


def test_close_is_idempotent_and_later_use_is_a_clear_error(store: KvStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.get_event(b"\x00" * 32)
    with pytest.raises(StorageError, match="closed"):
        store.append(AppendRequest(envelope=make_envelope()))


def test_times_out_of_range_are_a_caller_error(store: KvStore) -> None:
    env = make_envelope()
    with pytest.raises(LocalProtocolError):
        store.append(AppendRequest(envelope=env, outbox_to=(DEST_1,), next_attempt_ms=-1))
    assert store.get_event(env.message_id) is None
    with pytest.raises(LocalProtocolError):
        store.take_due(now_ms=-5, limit=1, lease_ms=0)
    with pytest.raises(LocalProtocolError):
        store.relay_put(USER_B, env, peer=PEER, known=True, now_ms=2**64 - 1, ttl_ms=1)


# --- paired API clients (SPEC §15.7) ---------------------------------------------------------


def test_clients_are_bounded_listed_and_deleted(store: KvStore) -> None:
    def record(n: int) -> ClientRecord:
        return ClientRecord(
            client_id=bytes([n]) * 16, secret_sha256=bytes([n]) * 32, name=f"c{n}", created_ms=n
        )

    assert store.add_client(record(2), max_clients=2)
    assert store.add_client(record(1), max_clients=2)
    assert not store.add_client(record(3), max_clients=2)  # the bound: nothing written
    assert store.clients() == [record(1), record(2)]
    with pytest.raises(LocalProtocolError):
        store.add_client(record(1), max_clients=9)  # an id is never reused silently
    assert store.delete_client(record(1).client_id)
    assert not store.delete_client(record(1).client_id)
    assert store.clients() == [record(2)]


def test_trust_is_kept_per_user_and_device_key(store: KvStore) -> None:
    alice, bob = UserId(b"A" * 32), UserId(b"B" * 32)
    assert store.trusted_devices(alice) == {}
    store.set_trust(alice, DeviceId(b"1" * 32), Trust.VERIFIED, now_ms=5)
    store.set_trust(bob, DeviceId(b"2" * 32), Trust.VERIFIED, now_ms=6)
    assert store.trusted_devices(alice) == {DeviceId(b"1" * 32): Trust.VERIFIED}
    assert store.trusted_devices(bob) == {DeviceId(b"2" * 32): Trust.VERIFIED}
    store.set_trust(bob, DeviceId(b"3" * 32), Trust.VERIFIED, now_ms=7)
    assert store.trusted_users() == {
        alice: {DeviceId(b"1" * 32): Trust.VERIFIED},
        bob: {DeviceId(b"2" * 32): Trust.VERIFIED, DeviceId(b"3" * 32): Trust.VERIFIED},
    }


def test_events_read_together_take_envelopes_in_hand_only_for_what_is_still_held(
    store: KvStore,
) -> None:
    """`get_events` (a receipt's named messages): what is held, as `get_event` reads it; an
    envelope in hand spares only its decode, never makes a recalled or unknown id held."""
    held, other, recalled = (make_envelope(seq=n, wall_ms=n * 1_000) for n in (1, 2, 3))
    store.append_many([AppendRequest(envelope=e) for e in (held, other, recalled)])
    assert store.withdraw(recalled.message_id, b"\x01" * 32, USER_A)  # body purged
    unknown = make_envelope(seq=4, wall_ms=4_000)  # never stored
    in_hand: dict[bytes, Envelope] = {e.message_id: e for e in (held, recalled, unknown)}
    ids = [e.message_id for e in (held, other, recalled, unknown)]
    found = store.get_events(ids, in_hand=in_hand)
    assert list(found) == [held.message_id, other.message_id]
    assert found[held.message_id].envelope is held  # taken as it is
    assert found[other.message_id].envelope is not other  # read from the store
    assert found == store.get_events(ids) == {m: store.get_event(m) for m in ids[:2]}
    # A held envelope whose bytes are not the stored ones is never taken for them.
    impostor = make_envelope(seq=1, wall_ms=1_000, body=b"else")
    taken = store.get_events([held.message_id], in_hand={held.message_id: impostor})
    assert taken[held.message_id].envelope.wire == held.wire
