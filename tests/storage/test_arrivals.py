"""The arrival log (SPEC §15.4.3): each stored event numbered in the order the store took it.

Contract tests (memory and LMDB), plus what only LMDB can show: the numbers survive a reopen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.storage.api import AppendRequest, AppendResult, FeedPage, FriendRequest
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.store import KvStore

from .helpers import ROOM_A, ROOM_B, USER_A, USER_B, make_envelope


def _numbers(page: FeedPage) -> list[tuple[int, bytes]]:
    return [(e.number, e.event.envelope.message_id) for e in page.entries]


def test_each_stored_event_gets_the_next_number_in_arrival_order(store: KvStore) -> None:
    assert store.last_arrival() == 0
    assert store.arrivals_after(0, limit=10) == FeedPage(entries=(), position=0, last=0)
    late = make_envelope(seq=2, wall_ms=5_000)
    early = make_envelope(seq=1, wall_ms=1_000)
    other = make_envelope(ROOM_B, wall_ms=3_000)
    # Arrival order, not history order: the later HLC was stored first.
    assert store.append_many([AppendRequest(envelope=late), AppendRequest(envelope=early)]) == [
        AppendResult.STORED,
        AppendResult.STORED,
    ]
    assert store.append(AppendRequest(envelope=other)) is AppendResult.STORED
    page = store.arrivals_after(0, limit=10)
    assert _numbers(page) == [(1, late.message_id), (2, early.message_id), (3, other.message_id)]
    assert (page.position, page.last) == (3, 3)
    assert page.entries[0].event == store.get_event(late.message_id)
    full = store.arrivals_after(1, limit=1)
    assert _numbers(full) == [(2, early.message_id)]
    assert (full.position, full.last) == (2, 3)  # stopped at the limit: the end read apart
    assert store.arrivals_after(2, limit=1).last == 3  # ran to the end: its last key
    assert store.arrivals_after(3, limit=5).entries == ()


def test_envelopes_in_hand_are_taken_as_they_are_not_decoded_again(store: KvStore) -> None:
    held = make_envelope(seq=1, wall_ms=1_000)
    other = make_envelope(seq=2, wall_ms=2_000)
    store.append_many([AppendRequest(envelope=held), AppendRequest(envelope=other)])
    page = store.arrivals_after(0, limit=10, in_hand={held.message_id: held})
    assert page.entries[0].event.envelope is held
    assert page.entries[1].event.envelope is not other  # read from the store
    assert page.entries[1].event.envelope == other
    assert page == store.arrivals_after(0, limit=10)  # the same page either way
    # A held envelope whose bytes are not the stored ones is never taken for them.
    impostor = make_envelope(seq=1, wall_ms=1_000, body=b"else")
    page = store.arrivals_after(0, limit=1, in_hand={held.message_id: impostor})
    assert page.entries[0].event.envelope.wire == held.wire


def test_duplicates_conflicts_and_failed_writes_take_no_number(store: KvStore) -> None:
    first = make_envelope(body=b"one")
    assert store.append(AppendRequest(envelope=first)) is AppendResult.STORED
    assert store.append(AppendRequest(envelope=first)) is AppendResult.DUPLICATE
    same_slot = make_envelope(body=b"two")
    assert store.append(AppendRequest(envelope=same_slot)) is AppendResult.CONFLICT
    bad = AppendRequest(envelope=make_envelope(seq=3, wall_ms=3_000), outbox_to=(b"",))
    with pytest.raises(LocalProtocolError):
        store.append_many([AppendRequest(envelope=make_envelope(seq=2, wall_ms=2_000)), bad])
    assert store.last_arrival() == 1
    after = make_envelope(seq=4, wall_ms=4_000)
    store.append(AppendRequest(envelope=after))
    assert _numbers(store.arrivals_after(0, limit=10)) == [
        (1, first.message_id),
        (2, after.message_id),
    ]


def test_an_append_tells_the_entries_it_numbered_as_the_log_reads_them(store: KvStore) -> None:
    store.append(AppendRequest(envelope=make_envelope(ROOM_B)))
    first, second = make_envelope(seq=1, wall_ms=1_000), make_envelope(seq=2, wall_ms=2_000)
    told = store.append_entries([AppendRequest(envelope=e) for e in (first, first, second)])
    assert [result for result, _ in told] == [
        AppendResult.STORED,
        AppendResult.DUPLICATE,  # no entry: nothing stored
        AppendResult.STORED,
    ]
    assert told[1][1] is None
    entries = [entry for _, entry in told if entry is not None]
    assert entries[0].event.envelope is first  # the request's own envelope, not a decode
    assert entries == list(store.arrivals_after(1, limit=10).entries)  # numbers and cursors
    assert store.append_entries([]) == []


def test_purged_events_are_passed_over_and_numbers_are_never_reused(store: KvStore) -> None:
    old = [make_envelope(seq=i, wall_ms=i) for i in (1, 2)]
    kept = make_envelope(seq=3, wall_ms=10**6)
    store.append_many([AppendRequest(envelope=e) for e in (*old, kept)])
    assert store.purge(now_ms=100, retention_ms=50).events == 2
    page = store.arrivals_after(0, limit=10)
    assert _numbers(page) == [(3, kept.message_id)]
    assert (page.position, page.last) == (3, 3)
    # Even when every event is purged, the newest number stays taken.
    assert store.purge(now_ms=10**7, retention_ms=50).events == 1
    assert store.last_arrival() == 3
    fresh = make_envelope(seq=4, wall_ms=10**7)
    store.append(AppendRequest(envelope=fresh))
    assert _numbers(store.arrivals_after(0, limit=10)) == [(4, fresh.message_id)]


def test_events_that_became_readable_move_to_the_end_of_the_log(store: KvStore) -> None:
    """SPEC §27.13.5: renumbered events take the next numbers in the order given, in place of
    their own; a newest entry moved keeps its number taken; unknown ids are passed over."""
    first, second, third = (make_envelope(seq=i, wall_ms=i * 1_000) for i in (1, 2, 3))
    store.append_many([AppendRequest(envelope=e) for e in (first, second, third)])
    assert store.renumber_arrivals([third.message_id, first.message_id, b"x" * 32]) == 2
    assert _numbers(store.arrivals_after(0, limit=10)) == [
        (2, second.message_id),
        (4, third.message_id),
        (5, first.message_id),
    ]
    assert store.last_arrival() == 5
    assert store.renumber_arrivals([]) == 0


def test_feed_page_limit_is_checked(store: KvStore) -> None:
    with pytest.raises(LocalProtocolError):
        store.arrivals_after(0, limit=0)
    with pytest.raises(LocalProtocolError):
        store.arrivals_after(0, limit=1001)


def test_outgoing_friend_requests_are_listed_until_answered(store: KvStore) -> None:
    request = FriendRequest(sender=USER_A, recipient=USER_B, created_ms=5, note="hi")
    assert store.put_friend_request(request)
    assert store.friend_requests_sent(USER_A) == [request]
    assert store.friend_requests_sent(USER_B) == []
    assert store.accept_friend_request(USER_A, USER_B, now_ms=9)
    assert store.friend_requests_sent(USER_A) == []
    assert store.put_friend_request(request)
    assert store.delete_friend_request(USER_A, USER_B)
    assert store.friend_requests_sent(USER_A) == []
    assert not store.delete_friend_request(USER_A, USER_B)


def test_arrival_numbers_survive_reopening_lmdb(tmp_path: Path) -> None:
    first = make_envelope(ROOM_A, seq=1)
    with LmdbStore(tmp_path / "s") as store:
        store.append(AppendRequest(envelope=first))
    second = make_envelope(ROOM_A, seq=2, wall_ms=2_000)
    with LmdbStore(tmp_path / "s") as store:
        assert store.last_arrival() == 1
        store.append(AppendRequest(envelope=second))
        assert _numbers(store.arrivals_after(0, limit=10)) == [
            (1, first.message_id),
            (2, second.message_id),
        ]
