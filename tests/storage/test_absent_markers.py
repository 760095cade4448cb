"""Markers of what an absent user is owed (SPEC §11.5.2, `storage.absent`), on both stores."""

from __future__ import annotations

from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.outbox import LEASE_MS
from hearthmesh.storage.api import AppendRequest
from hearthmesh.storage.store import KvStore

from .helpers import ROOM_A, ROOM_B, make_envelope

ABSENT = b"\x07" * 32
"""A user whose home no record names."""
UP = b"peer-up"


def _store_all(
    store: KvStore,
    envelopes: list[Envelope],
    *,
    outbox_to: tuple[bytes, ...] = (),
    absent_to: tuple[bytes, ...] = (),
) -> None:
    for envelope in envelopes:
        request = AppendRequest(
            envelope=envelope, outbox_to=outbox_to, absent_to=absent_to, next_attempt_ms=10
        )
        store.append(request)


def test_an_absent_users_envelopes_are_one_marker_and_become_its_entries_in_order(
    store: KvStore,
) -> None:
    envelopes = [make_envelope(seq=i, wall_ms=1_000 + i) for i in range(1, 7)]
    _store_all(store, envelopes, outbox_to=(UP,), absent_to=(ABSENT,))
    device = envelopes[0].sender_device
    # one run of numbers, not an entry per envelope
    assert store.absent_markers(ABSENT) == [(ROOM_A, device, 1, 6)]
    due = store.take_due(now_ms=10**9, limit=100, lease_ms=1)
    assert {e.destination for e in due} == {UP}
    assert store.parked_destinations() == [ABSENT]  # a restart probes it
    # its probe: the marker becomes parked entries, history order, the first few back in queue
    assert store.unpark(ABSENT, now_ms=50, limit=2) == 2
    assert store.absent_markers(ABSENT) == []
    back = store.take_due(now_ms=50, limit=100, lease_ms=10**6)
    assert [e.message_id for e in back] == [e.message_id for e in envelopes[:2]]
    assert store.unpark(ABSENT, now_ms=60, limit=100) == 4
    rest = store.take_due(now_ms=60, limit=100, lease_ms=1)
    assert [e.message_id for e in rest] == [e.message_id for e in envelopes[2:]]
    assert store.parked_destinations() == []


def test_a_number_that_does_not_follow_starts_a_run_and_one_covered_adds_nothing(
    store: KvStore,
) -> None:
    first = [make_envelope(seq=i, wall_ms=1_000 + i) for i in (1, 2)]
    later = [make_envelope(seq=i, wall_ms=1_000 + i) for i in (5, 6)]
    other_room = make_envelope(ROOM_B, seq=3, wall_ms=1_003)
    _store_all(store, [*first, *later, other_room], absent_to=(ABSENT,))
    # 3 and 4 went to others only (the user was not a member then): not owed
    gap = [make_envelope(seq=i, wall_ms=1_000 + i, body=b"gap") for i in (3, 4)]
    _store_all(store, gap, outbox_to=(UP,))
    device = first[0].sender_device
    markers = store.absent_markers(ABSENT)
    assert sorted(markers) == sorted(
        [(ROOM_A, device, 1, 2), (ROOM_A, device, 5, 6), (ROOM_B, device, 3, 3)]
    )
    assert store.unpark(ABSENT, now_ms=10, limit=100) == 5
    due = store.take_due(now_ms=10, limit=100, lease_ms=1)
    owed = {e.message_id for e in due if e.destination == ABSENT}
    assert owed == {e.message_id for e in [*first, *later, other_room]}


def test_an_entry_pending_already_is_kept_and_a_marker_adds_no_second(store: KvStore) -> None:
    envelope = make_envelope(seq=1, wall_ms=1_000)
    store.append(AppendRequest(envelope=envelope, outbox_to=(ABSENT,), next_attempt_ms=10))
    store.park_many(ABSENT, [envelope.message_id])
    after = make_envelope(seq=2, wall_ms=1_002)
    _store_all(store, [after], absent_to=(ABSENT,))
    assert store.unpark(ABSENT, now_ms=5_000, limit=100) == 2
    due = store.take_due(now_ms=5_000, limit=100, lease_ms=1)
    assert [e.message_id for e in due] == [envelope.message_id, after.message_id]


def test_purge_keeps_what_a_marker_owes_until_it_is_delivered(store: KvStore) -> None:
    owed = make_envelope(seq=1, wall_ms=1_000)
    _store_all(store, [owed], absent_to=(ABSENT,))
    report = store.purge(now_ms=10**9, retention_ms=1)
    assert (report.events, report.kept_for_outbox) == (0, 1)
    assert store.unpark(ABSENT, now_ms=10, limit=10) == 1  # the marker became its entry
    (entry,) = store.take_due(now_ms=10, limit=10, lease_ms=1)
    assert entry.next_attempt_ms == 11
    assert store.purge(now_ms=10**9, retention_ms=1).kept_for_outbox == 1
    assert store.ack(ABSENT, owed.message_id)
    assert store.purge(now_ms=10**9, retention_ms=1).events == 1


def test_expanded_entries_park_under_their_commit_times_lease(store: KvStore) -> None:
    """An entry a commit wrote parks at its due time (now + lease): one from a marker parks at
    its event's time plus the lease, so the two kinds keep history order between them."""
    marked = make_envelope(seq=1, wall_ms=1_000)
    _store_all(store, [marked], absent_to=(ABSENT,))
    entry = make_envelope(seq=2, wall_ms=1_001)
    store.append(
        AppendRequest(envelope=entry, outbox_to=(ABSENT,), next_attempt_ms=1_001 + LEASE_MS)
    )
    store.park_many(ABSENT, [entry.message_id])
    assert store.unpark(ABSENT, now_ms=10**6, limit=10) == 2
    due = store.take_due(now_ms=10**6, limit=10, lease_ms=1)
    assert [e.message_id for e in due] == [marked.message_id, entry.message_id]
