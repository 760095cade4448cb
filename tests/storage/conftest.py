"""The `store` fixture: every contract test runs on the in-memory twin and on LMDB; the
`run_on` fixture: a test runs on asyncio's loop and on uvloop's (a node process runs on uvloop,
an embedding app on whatever loop it has)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from hearthmesh.storage.api import RelayQuota
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.store import KvStore

SMALL_MAP_BYTES = 256 * 1024
"""Small on purpose: the contract tests also exercise map growth."""
TEST_QUOTA = RelayQuota(max_count=3, max_bytes=4_000)

T = TypeVar("T")
RunOn = Callable[[Coroutine[Any, Any, T]], T]
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def open_store(kind: str, path: Path) -> KvStore:
    if kind == "memory":
        return MemoryStore(relay_quota=TEST_QUOTA)
    return LmdbStore(path / "store", map_size=SMALL_MAP_BYTES, relay_quota=TEST_QUOTA)


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KvStore]:
    opened = open_store(request.param, tmp_path)
    yield opened
    opened.close()


@pytest.fixture(params=sorted(LOOPS))
def run_on(request: pytest.FixtureRequest) -> RunOn[Any]:
    """Runs a coroutine to its end on a new loop of the kind the test is parametrized with."""

    def run(main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(main)

    return run
