"""Release order across restarts: what was held back in memory is read back from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.protocol.ordering import REORDER_WINDOW
from hearthmesh.storage.api import AppendRequest, AppendResult
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.store import KvStore

from ..storage.helpers import make_envelope


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KvStore:
    return MemoryStore() if request.param == "memory" else LmdbStore(tmp_path / "db")


def _store_and_offer(store: KvStore, release: ReleaseOrder, seq: int) -> list[int]:
    envelope = make_envelope(seq=seq, wall_ms=1_000 + seq)
    assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    released = release.offer(store, envelope, first_seq_if_new=1)
    release.save(store)
    return [e.seq for e in released]


def test_what_was_held_before_a_restart_follows_the_gap_when_it_is_filled(store: KvStore) -> None:
    before = ReleaseOrder()
    assert _store_and_offer(store, before, 1) == [1]
    assert _store_and_offer(store, before, 3) == []  # held: 2 is missing
    assert _store_and_offer(store, before, 4) == []
    after = ReleaseOrder()  # a restart forgets what was held in memory
    assert _store_and_offer(store, after, 2) == [2, 3, 4]
    assert _store_and_offer(store, after, 5) == [5]


def test_a_duplicate_of_a_held_envelope_releases_it_after_a_restart(store: KvStore) -> None:
    before = ReleaseOrder()
    assert _store_and_offer(store, before, 2) == []  # held: 1 is missing
    one = make_envelope(seq=1, wall_ms=1_001)
    store.append(AppendRequest(envelope=one))  # stored by a path that did not offer it
    after = ReleaseOrder()
    assert [e.seq for e in after.offer(store, one, first_seq_if_new=1)] == [1, 2]


def test_one_stored_beyond_the_window_is_released_when_its_turn_comes(store: KvStore) -> None:
    release = ReleaseOrder()
    far = REORDER_WINDOW + 1
    assert _store_and_offer(store, release, far) == []  # beyond the window: not held
    earlier = [make_envelope(seq=seq, wall_ms=1_000 + seq) for seq in range(1, far)]
    store.append_many([AppendRequest(envelope=e) for e in earlier])  # one commit
    released: list[int] = []
    for envelope in earlier:
        released += [e.seq for e in release.offer(store, envelope, first_seq_if_new=1)]
    assert released == list(range(1, far + 1))


def test_one_stored_beyond_the_window_is_released_when_the_rest_come_one_by_one() -> None:
    """A read-back that finds nothing right after the next number proves nothing about one
    stored past the window: it still follows the gap (it used to wait for a restart). In
    memory: 4,097 commits one by one are the disk's time, not the rule's."""
    store = MemoryStore()
    release = ReleaseOrder()
    far = REORDER_WINDOW + 1
    assert _store_and_offer(store, release, far) == []
    released: list[int] = []
    for seq in range(1, far):
        released += _store_and_offer(store, release, seq)
    assert released == list(range(1, far + 1))


def test_one_held_past_the_read_back_range_before_a_restart_is_released_in_its_turn() -> None:
    """Memory held 300 (2..299 missing) when the node stopped; a read-back covers 256 numbers,
    so the first one after the restart does not reach it. The highest number stored, read on
    resume, keeps the sender read back until it is released (it used to wait for another
    restart). In memory: 300 commits one by one are the disk's time, not the rule's."""
    store = MemoryStore()
    before = ReleaseOrder()
    assert _store_and_offer(store, before, 1) == [1]
    assert _store_and_offer(store, before, 300) == []
    after = ReleaseOrder()
    released: list[int] = []
    for seq in range(2, 300):
        released += _store_and_offer(store, after, seq)
    assert released == list(range(2, 301))
