"""Relay inbox bounds (SPEC §11.5.3): per sender, per peer, strangers, the total, fair eviction,
and expired entries that count for nothing. Contract tests: memory twin and LMDB alike."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import QuotaExceeded
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import RelayQuota
from hearthmesh.storage.keys import KEY_END, Table
from hearthmesh.storage.kv import KvTxn
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.relay import RELAY_SHARES_FILLED_SETTING
from hearthmesh.storage.relay_shares import audit_shares_txn
from hearthmesh.storage.store import KvStore
from tests.conftest import examples

from .helpers import USER_A, USER_B, make_envelope

HONEST = b"12D3KooWHonestHome"
ABUSER = b"12D3KooWAbuser"
ABUSER_2 = b"12D3KooWAbuserTwo"
ROOMY = RelayQuota(max_count=1_000, max_bytes=1 << 30)
"""Every bound out of the way but the ones a test sets."""

StoreFactory = Callable[[RelayQuota], KvStore]


@pytest.fixture(params=["memory", "lmdb"])
def open_relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[KvStore] = []

    def factory(quota: RelayQuota) -> KvStore:
        if request.param == "memory":
            store: KvStore = MemoryStore(relay_quota=quota)
        else:
            store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=quota)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _recipient(index: int) -> UserId:
    return UserId(hashlib.sha256(b"recipient %d" % index).digest())


def _envelope(index: int, *, user: bytes = USER_A, body: bytes = b"hello") -> Envelope:
    return make_envelope(seq=index + 1, wall_ms=1_000 + index, user=user, body=body)


def _held(store: KvStore, recipient: bytes) -> list[bytes]:
    return [e.message_id for e in store.relay_take(recipient, now_ms=0, limit=1_000)]


def test_one_stranger_peer_cannot_fill_the_relay_with_random_recipients(
    open_relay: StoreFactory,
) -> None:
    # The finding: 330 envelopes to 330 made-up recipients were all held. Defaults otherwise.
    store = open_relay(RelayQuota(max_count=10_000, max_bytes=64 << 20))
    held = refused = 0
    for index in range(330):
        try:
            store.relay_put(
                _recipient(index),
                _envelope(index, body=b"x" * 2_000),
                peer=ABUSER,
                known=False,
                now_ms=0,
                ttl_ms=10_000,
            )
            held += 1
        except QuotaExceeded as exc:
            assert "strangers' peer" in str(exc)
            refused += 1
    assert (held, refused) == (100, 230)
    # Its refusals changed nothing: the first 100 are still there, the rest never were.
    assert len(_held(store, _recipient(0))) == 1
    assert _held(store, _recipient(100)) == []


def test_a_sender_is_bounded_across_peers_and_recipients(open_relay: StoreFactory) -> None:
    store = open_relay(RelayQuota(max_count=1_000, max_bytes=1 << 30, sender_count=3))
    for index, peer in enumerate([HONEST, ABUSER, ABUSER_2]):
        store.relay_put(
            _recipient(index), _envelope(index), peer=peer, known=True, now_ms=0, ttl_ms=100
        )
    with pytest.raises(QuotaExceeded, match="sender " + USER_A.hex()):
        store.relay_put(_recipient(9), _envelope(9), peer=HONEST, known=True, now_ms=0, ttl_ms=100)
    # Another sender through the same peer is not touched by USER_A's bound.
    assert store.relay_put(
        _recipient(9), _envelope(9, user=USER_B), peer=HONEST, known=True, now_ms=0, ttl_ms=100
    )


def test_a_peer_is_bounded_and_an_ack_gives_its_share_back(open_relay: StoreFactory) -> None:
    quota = RelayQuota(max_count=1_000, max_bytes=1 << 30, peer_count=2)
    store = open_relay(quota)
    first, second = _envelope(1), _envelope(2, user=USER_B)
    store.relay_put(_recipient(1), first, peer=ABUSER, known=True, now_ms=0, ttl_ms=100)
    store.relay_put(_recipient(2), second, peer=ABUSER, known=True, now_ms=0, ttl_ms=100)
    with pytest.raises(QuotaExceeded, match="peer " + ABUSER.decode()):
        store.relay_put(_recipient(3), _envelope(3), peer=ABUSER, known=False, now_ms=0, ttl_ms=99)
    assert store.relay_ack(_recipient(1), [first.message_id]) == 1
    assert store.relay_put(_recipient(3), _envelope(3), peer=ABUSER, known=True, now_ms=0, ttl_ms=9)


def test_an_expired_entry_counts_for_nothing_before_any_purge(open_relay: StoreFactory) -> None:
    # The finding: expired entries kept counting, so a full recipient was refused forever.
    store = open_relay(RelayQuota(max_count=3, max_bytes=1 << 30))
    for index in range(3):
        store.relay_put(USER_B, _envelope(index), peer=HONEST, known=True, now_ms=0, ttl_ms=100)
    with pytest.raises(QuotaExceeded):
        store.relay_put(USER_B, _envelope(7), peer=HONEST, known=True, now_ms=99, ttl_ms=100)
    fresh = _envelope(8)
    assert store.relay_put(USER_B, fresh, peer=HONEST, known=True, now_ms=100, ttl_ms=100)
    assert _held(store, USER_B) == [fresh.message_id]
    assert store.relay_usage(USER_B).count == 1


def test_fair_eviction_keeps_the_honest_holders_envelopes(open_relay: StoreFactory) -> None:
    store = open_relay(RelayQuota(max_count=1_000, max_bytes=1 << 30, total_count=10, peer_count=6))
    honest = [_envelope(i, user=USER_B) for i in range(2)]
    for env in honest:
        store.relay_put(USER_A, env, peer=HONEST, known=True, now_ms=0, ttl_ms=1_000)
    for index in range(6):
        store.relay_put(
            _recipient(index), _envelope(10 + index), peer=ABUSER, known=True, now_ms=0, ttl_ms=99
        )
    # Its own bound refuses the abuser: it may not evict anyone to make room for itself.
    with pytest.raises(QuotaExceeded, match="peer"):
        store.relay_put(_recipient(9), _envelope(30), peer=ABUSER, known=True, now_ms=0, ttl_ms=9)
    # A second identity fills the total, then can only take from the largest holder, until
    # the two hold equal shares.
    taken = 0
    for index in range(6):
        try:
            store.relay_put(
                _recipient(20 + index),
                _envelope(40 + index, user=b"\x0c" * 32),
                peer=ABUSER_2,
                known=True,
                now_ms=0,
                ttl_ms=1_000,
            )
        except QuotaExceeded as exc:
            assert "pool full" in str(exc)
            break
        taken += 1
    assert taken == 4
    assert _held(store, USER_A) == [env.message_id for env in honest]
    assert sum(len(_held(store, _recipient(i))) for i in range(6)) == 4
    # The honest home, holding least, still gets room: from the largest holder.
    later = _envelope(50, user=USER_B)
    assert store.relay_put(USER_A, later, peer=HONEST, known=True, now_ms=0, ttl_ms=1_000)
    assert _held(store, USER_A) == [env.message_id for env in [*honest, later]]


def test_a_strangers_envelope_never_evicts_a_known_one(open_relay: StoreFactory) -> None:
    store = open_relay(RelayQuota(max_count=1_000, max_bytes=1 << 30, total_count=3))
    known = [_envelope(i, user=USER_B) for i in range(3)]
    for env in known:
        store.relay_put(USER_A, env, peer=HONEST, known=True, now_ms=0, ttl_ms=1_000)
    with pytest.raises(QuotaExceeded, match="pool full"):
        store.relay_put(_recipient(1), _envelope(9), peer=ABUSER, known=False, now_ms=0, ttl_ms=9)
    assert _held(store, USER_A) == [env.message_id for env in known]


def test_a_known_envelope_takes_the_place_of_a_strangers(open_relay: StoreFactory) -> None:
    store = open_relay(RelayQuota(max_count=1_000, max_bytes=1 << 30, total_count=3))
    strangers = [_envelope(i) for i in range(3)]
    for index, env in enumerate(strangers):
        store.relay_put(
            _recipient(index), env, peer=ABUSER, known=False, now_ms=index, ttl_ms=1_000
        )
    mine = _envelope(9, user=USER_B)
    assert store.relay_put(USER_A, mine, peer=HONEST, known=True, now_ms=0, ttl_ms=1_000)
    assert _held(store, USER_A) == [mine.message_id]
    assert _held(store, _recipient(0)) == []  # the oldest stranger's envelope made room
    assert len(_held(store, _recipient(1)) + _held(store, _recipient(2))) == 2


def test_the_strangers_pool_is_capped_below_the_total(open_relay: StoreFactory) -> None:
    store = open_relay(
        RelayQuota(max_count=1_000, max_bytes=1 << 30, stranger_count=2, stranger_peer_count=2)
    )
    for index in range(2):
        store.relay_put(
            _recipient(index), _envelope(index), peer=ABUSER, known=False, now_ms=0, ttl_ms=99
        )
    with pytest.raises(QuotaExceeded):  # the largest stranger holder is the one putting
        store.relay_put(_recipient(5), _envelope(5), peer=ABUSER, known=False, now_ms=0, ttl_ms=9)
    assert store.relay_put(_recipient(6), _envelope(6), peer=HONEST, known=True, now_ms=0, ttl_ms=9)


def test_shares_are_given_back_by_ack_purge_and_eviction(open_relay: StoreFactory) -> None:
    quota = RelayQuota(max_count=1_000, max_bytes=1 << 30, peer_count=2, sender_count=2)
    store = open_relay(quota)
    for round_ms in (0, 1_000, 2_000):
        envs = [_envelope(round_ms + i) for i in range(2)]
        for index, env in enumerate(envs):
            assert store.relay_put(
                _recipient(index), env, peer=ABUSER, known=True, now_ms=round_ms, ttl_ms=500
            )
        if round_ms == 1_000:
            store.relay_ack(_recipient(0), [envs[0].message_id])
            store.relay_ack(_recipient(1), [envs[1].message_id])
        else:
            assert store.purge(now_ms=round_ms + 500, retention_ms=10**12).relay_entries == 2
    assert store.relay_recipients() == []


_PEERS = [HONEST, ABUSER, ABUSER_2]
_SENDERS = [USER_A, USER_B, b"\x0c" * 32]


@st.composite
def _operations(draw: st.DrawFn) -> list[tuple[str, int, int, int, bool, int]]:
    """(op, peer, sender, recipient, known, size) steps: puts, acks and purges."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["put", "put", "put", "ack", "advance"]),
                st.integers(0, 2),
                st.integers(0, 2),
                st.integers(0, 3),
                st.booleans(),
                st.integers(0, 3_000),
            ),
            max_size=60,
        )
    )


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_operations())
def test_kept_counters_always_equal_a_recount(
    steps: list[tuple[str, int, int, int, bool, int]],
) -> None:
    """Whatever puts, refusals, evictions, acks and expiries happen, the incremental counters
    agree with a recount of the held entries (SPEC §11.5.3: kept, never scanned)."""
    quota = RelayQuota(
        max_count=6,
        max_bytes=12_000,
        sender_count=8,
        peer_count=8,
        stranger_peer_count=3,
        stranger_count=5,
        stranger_bytes=8_000,
        total_count=12,
        total_bytes=24_000,
    )
    store = MemoryStore(relay_quota=quota)
    now_ms = 0
    held: dict[int, list[bytes]] = {}
    for number, (op, peer, sender, recipient, known, size) in enumerate(steps):
        if op == "put":
            env = make_envelope(seq=number + 1, user=_SENDERS[sender], body=b"x" * size)
            try:
                store.relay_put(
                    _recipient(recipient),
                    env,
                    peer=_PEERS[peer],
                    known=known,
                    now_ms=now_ms,
                    ttl_ms=1_000,
                )
                held.setdefault(recipient, []).append(env.message_id)
            except QuotaExceeded:
                pass
        elif op == "ack":
            store.relay_ack(_recipient(recipient), held.pop(recipient, [])[:1])
        else:
            now_ms += size
        with store._engine.read() as txn:
            assert audit_shares_txn(txn) == []
    store.close()


def test_entries_held_before_shares_existed_are_counted_once_at_open(tmp_path: Path) -> None:
    quota = RelayQuota(max_count=1_000, max_bytes=1 << 30, stranger_count=2)
    store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=quota)
    for index in range(2):
        store.relay_put(
            _recipient(index), _envelope(index), peer=HONEST, known=True, now_ms=0, ttl_ms=99
        )

    def forget_shares(txn: KvTxn) -> None:  # what a store written before this revision holds
        for table in (
            Table.RELAY_HOLDERS,
            Table.RELAY_SENDERS,
            Table.RELAY_PEERS,
            Table.RELAY_TOTALS,
            Table.RELAY_BY_SIZE,
            Table.RELAY_BY_PEER,
        ):
            for key in [k for k, _ in txn.scan(table, b"", KEY_END)]:
                txn.delete(table, key)
        txn.delete(Table.SETTINGS, RELAY_SHARES_FILLED_SETTING.encode())

    store._engine.write(forget_shares)
    store.close()
    store = LmdbStore(tmp_path / "store", map_size=1 << 22, relay_quota=quota)
    with store._engine.read() as txn:
        assert audit_shares_txn(txn) == []
    # counted as strangers' envelopes: a new stranger's one makes room by evicting one of them
    assert store.relay_put(
        _recipient(5), _envelope(5), peer=ABUSER, known=False, now_ms=0, ttl_ms=9
    )
    assert len(_held(store, _recipient(0)) + _held(store, _recipient(1))) == 1
    store.close()
