"""The `store` fixture: every contract test runs on the in-memory twin and on LMDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.storage.api import RelayQuota
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.store import KvStore

SMALL_MAP_BYTES = 256 * 1024
"""Small on purpose: the contract tests also exercise map growth."""
TEST_QUOTA = RelayQuota(max_count=3, max_bytes=4_000)


def open_store(kind: str, path: Path) -> KvStore:
    if kind == "memory":
        return MemoryStore(relay_quota=TEST_QUOTA)
    return LmdbStore(path / "store", map_size=SMALL_MAP_BYTES, relay_quota=TEST_QUOTA)


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KvStore]:
    opened = open_store(request.param, tmp_path)
    yield opened
    opened.close()
