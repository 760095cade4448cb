"""The ordered key-value layer under the store: what LMDB and the in-memory twin both provide.

The store's logic (`store.py` and its `_txn` helpers) is written once against `KvTxn`, so both
engines share the key layouts of `keys.py` and behave alike; the contract suite runs on both.
This is the sawtooth `Database` / `DictDatabase` split (CONVENTIONS §1.5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeVar

from hearthmesh.protocol.errors import LocalProtocolError

from .api import Outcome
from .keys import Table

if TYPE_CHECKING:
    from .staged import StagedWrites

__all__ = ["MAX_KEY_BYTES", "KvEngine", "KvTxn", "Outcome", "T", "check_key"]

T = TypeVar("T")

MAX_KEY_BYTES = 511
"""LMDB's default key size limit; both engines enforce it."""


def check_key(key: bytes) -> None:
    """Keys are 1..MAX_KEY_BYTES bytes in both engines.

    Raises:
        LocalProtocolError: an empty or over-long key (e.g. a 600-byte handle).
    """
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise LocalProtocolError(f"key of {len(key)} bytes (1..{MAX_KEY_BYTES})")


class KvTxn(Protocol):
    """One open transaction. Keys and values are `bytes`; tables are `keys.Table`."""

    def get(self, table: Table, key: bytes) -> bytes | None:
        """The value under `key`, or None."""
        ...

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        """Store `value` under `key`, replacing any value."""
        ...

    def insert(self, table: Table, key: bytes, value: bytes) -> bool:
        """Store `value` unless `key` exists; True if it was stored."""
        ...

    def delete(self, table: Table, key: bytes) -> bool:
        """Remove `key`; True if it existed."""
        ...

    def discard(self, table: Table, key: bytes) -> None:
        """Remove `key` if it exists, without asking whether it did (a staged batch then
        reads nothing below it)."""
        ...

    def scan(
        self, table: Table, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items with `start <= key < end`, ascending (or descending with `reverse`).

        Do not write to `table` while a scan of it is being consumed: collect first.
        """
        ...


class KvEngine(Protocol):
    """Opens transactions. Writes are serialised; a write is all-or-nothing."""

    @property
    def where(self) -> str:
        """The path (or `:memory:`) that error messages name."""
        ...

    def read(self) -> AbstractContextManager[KvTxn]:
        """A read-only snapshot for the duration of the `with` block."""
        ...

    def write(self, fn: Callable[[KvTxn], T]) -> T:
        """Run `fn` in one write transaction and commit it; `fn` may be run again on retry.

        Returns only after the commit is durable. If `fn` raises, nothing is written.
        Inside `write_batch` it is a nested transaction of the batch's (committed with it).
        """
        ...

    def write_batch(self, calls: Sequence[Callable[[], object]]) -> list[Outcome]:
        """Run `calls` in order in ONE write transaction, committed once (group commit).

        Every `read()` and `write()` a call makes on this thread joins that transaction, so a
        call sees the ones before it. A call that raises has its own changes undone and its
        exception returned as its `Outcome`; the others are unaffected. If the commit fails,
        every outcome is that `StorageError`.
        """
        ...

    def stage_batch(
        self, calls: Sequence[Callable[[], object]]
    ) -> tuple[list[Outcome], StagedWrites | None]:
        """`write_batch`, but the commit is left to `commit_staged` (on another thread) when
        the engine can: the writes it returns, or None if it committed them itself."""
        ...

    def commit_staged(self, batches: Sequence[StagedWrites]) -> None:
        """Commit staged batches, oldest first, in one durable transaction."""
        ...

    def snapshot(self, fn: Callable[[], T]) -> T:
        """Run `fn` with every `read()` it makes on this thread in one read-only snapshot.

        Raises:
            LocalProtocolError: `fn` tried to write.
        """
        ...

    @property
    def concurrent_reads(self) -> bool:
        """True if a snapshot may run on another thread while a write batch commits."""
        ...

    def close(self) -> None:
        """Release the engine; idempotent."""
        ...
