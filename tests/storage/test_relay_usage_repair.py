"""A damaged `relay.usage` row is rebuilt from the recipient's entries, which it only counts
(SPEC §11.8.7), on real LMDB: the relay inbox goes on, its bounds still hold."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.storage.keys import Table
from hearthmesh.storage.store import KvStore

from .conftest import open_store
from .helpers import PEER, USER_B, make_envelope


@pytest.fixture
def lmdb(tmp_path: Path) -> Iterator[KvStore]:
    opened = open_store("lmdb", tmp_path)
    yield opened
    opened.close()


ENVELOPES = [make_envelope(seq=n, wall_ms=1_000 + n, body=b"x" * (10 * n)) for n in (1, 2, 3)]


def _put(store: KvStore, index: int) -> bool:
    return store.relay_put(USER_B, ENVELOPES[index], peer=PEER, known=True, now_ms=0, ttl_ms=60_000)


def test_a_damaged_usage_row_is_answered_from_the_entries_and_rewritten_once(
    lmdb: KvStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert _put(lmdb, 0) and _put(lmdb, 1)
    held = lmdb.relay_usage(USER_B)
    lmdb._engine.write(lambda txn: txn.put(Table.RELAY_USAGE, USER_B, b"\x01\x02\x03"))
    assert lmdb.relay_usage(USER_B) == held  # answered from relay.messages
    assert lmdb.relay_recipients() == [USER_B]
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.relay"):
        assert _put(lmdb, 2)  # a new arrival number: nothing held is overwritten
        assert lmdb.relay_ack(USER_B, [ENVELOPES[0].message_id]) == 1
    wires = [len(e.wire) for e in ENVELOPES[1:]]
    assert (lmdb.relay_usage(USER_B).count, lmdb.relay_usage(USER_B).bytes) == (2, sum(wires))
    taken = lmdb.relay_take(USER_B, now_ms=0, limit=10)
    assert [e.message_id for e in taken] == [e.message_id for e in ENVELOPES[1:]]
    assert len([r for r in caplog.records if "rebuilt" in r.getMessage()]) == 1
