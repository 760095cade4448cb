"""A damaged relay share (`relay.senders`, `relay.peers`, `relay.totals`) is recounted from the
entries it counts (SPEC §11.8.7), on real LMDB: the relay inbox goes on, the bounds still hold
at the recounted share, and the counters agree with the entries again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.protocol.errors import QuotaExceeded
from hearthmesh.storage.api import RelayQuota
from hearthmesh.storage.keys import Table, relay_holder_key
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.relay_shares import audit_shares_txn
from hearthmesh.storage.store import KvStore

from .helpers import PEER, USER_A, USER_B, make_envelope

BOUND = 4
"""The bound of the damaged share: the recount must reach it after 3 puts, not restart at 0."""
QUOTAS = {
    Table.RELAY_SENDERS: RelayQuota(max_count=100, max_bytes=1 << 30, sender_count=BOUND),
    Table.RELAY_PEERS: RelayQuota(max_count=100, max_bytes=1 << 30, peer_count=BOUND),
    # a class total is a pool's cap: a known envelope past it evicts rather than is refused,
    # so the strangers' pool shows it (one peer, the largest holder, is refused)
    Table.RELAY_TOTALS: RelayQuota(max_count=100, max_bytes=1 << 30, stranger_count=BOUND),
}
KEYS = {
    Table.RELAY_SENDERS: USER_A,
    Table.RELAY_PEERS: relay_holder_key(False, PEER),
    Table.RELAY_TOTALS: bytes([False]),
}
ENVELOPES = [make_envelope(seq=n, wall_ms=1_000 + n, body=b"x" * (10 * n)) for n in range(1, 6)]


@pytest.fixture(params=list(QUOTAS), ids=lambda table: table.value.decode())
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Table, KvStore]]:
    store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=QUOTAS[request.param])
    yield request.param, store
    store.close()


def _put(store: KvStore, index: int) -> bool:
    return store.relay_put(
        USER_B, ENVELOPES[index], peer=PEER, known=False, now_ms=0, ttl_ms=60_000
    )


def test_a_damaged_share_is_recounted_from_the_entries_and_its_bound_still_holds(
    damaged: tuple[Table, KvStore], caplog: pytest.LogCaptureFixture
) -> None:
    table, store = damaged
    assert _put(store, 0) and _put(store, 1) and _put(store, 2)
    store._engine.write(lambda txn: txn.put(table, KEYS[table], b"\x01\x02\x03"))
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.relay_shares"):
        assert _put(store, 3)  # the 4th of a bound of 4: the recount says 3 are held
        with pytest.raises(QuotaExceeded):
            _put(store, 4)  # a recount from 0 would take a 5th
        assert store.relay_ack(USER_B, [ENVELOPES[0].message_id]) == 1
    with store._engine.read() as txn:
        assert audit_shares_txn(txn) == []
    repairs = [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(repairs) == 1 and table.value.decode() in repairs[0]
    assert _put(store, 4)  # room again after the ack


def test_a_damaged_share_is_recounted_once_even_when_the_puts_are_refused(
    damaged: tuple[Table, KvStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A put refused at its bound dropped the repair made in its transaction, so each refused
    put recounted and logged again: the repair is a write of its own."""
    table, store = damaged
    assert all(_put(store, n) for n in range(BOUND))
    store._engine.write(lambda txn: txn.put(table, KEYS[table], b"\x01\x02\x03"))
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.relay_shares"):
        for _ in range(2):
            with pytest.raises(QuotaExceeded):
                _put(store, BOUND)
    repairs = [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(repairs) == 1 and table.value.decode() in repairs[0]
    with store._engine.read() as txn:
        assert audit_shares_txn(txn) == []


OTHER_PEER = b"12D3KooWStorageTestLargest"
"""The pool's largest holder: a refused put reads its share to pick a victim."""


def test_the_largest_holders_damaged_share_is_recounted_once_when_the_puts_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A put into a full pool reads the largest holder's share to decide whether to evict from
    it; refused (the newcomer holds as many), the put dropped the recount made in its
    transaction, so each refused put recounted that share and logged again."""
    quota = RelayQuota(max_count=100, max_bytes=1 << 30, stranger_count=BOUND)
    store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=quota)
    try:
        for n, peer in enumerate([OTHER_PEER, OTHER_PEER, PEER, PEER]):
            body = b"x" * (100 if peer == OTHER_PEER else 10)  # the other is the largest
            envelope = make_envelope(seq=n + 1, wall_ms=1_000 + n, body=body)
            assert store.relay_put(
                USER_B, envelope, peer=peer, known=False, now_ms=0, ttl_ms=60_000
            )
        key = relay_holder_key(False, OTHER_PEER)
        store._engine.write(lambda txn: txn.put(Table.RELAY_PEERS, key, b"\x01\x02\x03"))
        with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.relay_shares"):
            for _ in range(2):
                with pytest.raises(QuotaExceeded):  # its 3rd: not more than the largest's 2
                    _put(store, 4)
        repairs = [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]
        assert len(repairs) == 1 and "relay.peers" in repairs[0]
        with store._engine.read() as txn:
            assert audit_shares_txn(txn) == []
    finally:
        store.close()


THIRD_PEER = b"12D3KooWStorageTestSecond"
"""The strangers' second largest holder: a put's second victim."""
LATER_VICTIM_ROWS = {
    "relay.peers": (Table.RELAY_PEERS, relay_holder_key(False, THIRD_PEER)),
    "relay.usage": (Table.RELAY_USAGE, USER_B),  # the victims' recipient
}


@pytest.mark.parametrize("damaged_row", list(LATER_VICTIM_ROWS))
def test_a_later_victims_damaged_share_is_recounted_once_when_the_puts_are_refused(
    damaged_row: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A known envelope evicts the strangers' largest holder's entry, then the next largest's,
    and is still refused (it does not fit the pool). The pre-check repairs the largest
    holders' shares only; the second victim's share (or its recipient's usage row), recounted
    in the put's transaction, went with the refusal, so each such put recounted it (a scan)
    and logged again: the store now repairs what a refused put's victims are counted in, in a
    write of its own."""
    sizes = {OTHER_PEER: 2_000, THIRD_PEER: 1_500}
    strangers = [
        make_envelope(seq=n + 1, body=b"x" * size) for n, size in enumerate(sizes.values())
    ]
    quota = RelayQuota(max_count=100, max_bytes=1 << 30, total_bytes=4_500)
    store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=quota)
    try:
        for peer, envelope in zip(sizes, strangers, strict=True):
            assert store.relay_put(
                USER_B, envelope, peer=peer, known=False, now_ms=0, ttl_ms=60_000
            )
        table, key = LATER_VICTIM_ROWS[damaged_row]
        store._engine.write(lambda txn: txn.put(table, key, b"\x01\x02\x03"))
        too_big = make_envelope(seq=9, body=b"y" * 4_600)  # past the pool with both gone

        def refused() -> None:
            with pytest.raises(QuotaExceeded):
                store.relay_put(USER_A, too_big, peer=PEER, known=True, now_ms=0, ttl_ms=60_000)

        with caplog.at_level(logging.WARNING, logger="hearthmesh.storage"):
            refused()  # the first recounts (in its transaction, and then in a write of its own)
            assert any(damaged_row in r.getMessage() for r in caplog.records)
            caplog.clear()
            refused()
            refused()
        assert [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()] == []
        assert store.relay_usage(USER_B).count == 2  # the refused puts evicted nothing
        with store._engine.read() as txn:
            assert audit_shares_txn(txn) == []
    finally:
        store.close()


def test_a_damaged_share_met_as_an_entry_is_removed_is_recounted_with_that_entry(
    tmp_path: Path,
) -> None:
    """An ack (or an eviction, or a purge) that meets its entry's damaged share recounts it
    while the entry is still held, then takes the entry off: recounted after the entry was
    deleted, the share lost it twice (kept 1 for 2 held) and the size index kept a stale key."""
    store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=QUOTAS[Table.RELAY_PEERS])
    try:
        for n in range(3):
            assert _put(store, n)
        key = KEYS[Table.RELAY_PEERS]
        store._engine.write(lambda txn: txn.put(Table.RELAY_PEERS, key, b"\x01\x02\x03"))
        assert store.relay_ack(USER_B, [ENVELOPES[0].message_id]) == 1
        with store._engine.read() as txn:
            assert audit_shares_txn(txn) == []
    finally:
        store.close()
