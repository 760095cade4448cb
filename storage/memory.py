"""The in-memory twin: the same store over sorted Python lists, for fast unit tests.

It keeps LMDB's semantics that the store relies on: ordered byte keys, all-or-nothing write
transactions (an undo log rolls back a failed one), the 511-byte key limit, and a clean error
after close. It holds nothing across restarts.

State: the sorted tables and the open transaction frames, of the one thread that uses the twin
(tests).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

from hearthmesh.protocol.errors import LocalProtocolError, StorageError

from .api import DEFAULT_RELAY_QUOTA, RelayQuota
from .blobs import MemoryBlobs
from .keys import Table
from .kv import KvTxn, Outcome, T, check_key
from .staged import StagedWrites
from .store import KvStore

__all__ = ["MemoryEngine", "MemoryStore"]


class _Table:
    __slots__ = ("data", "keys")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.data: dict[bytes, bytes] = {}


_Undo = list[tuple[_Table, bytes, bytes | None]]


class _MemoryTxn:
    """A transaction over the tables; writes are recorded in `undo` (None: read-only)."""

    def __init__(self, tables: dict[Table, _Table], undo: _Undo | None) -> None:
        self._tables = tables
        self._undo = undo

    @property
    def undo(self) -> _Undo | None:
        return self._undo

    def _writable(self, table: Table, key: bytes) -> tuple[_Table, _Undo]:
        if self._undo is None:
            raise LocalProtocolError("write in a read-only transaction")
        check_key(key)
        return self._tables[table], self._undo

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self._tables[table].data.get(key)

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        t, undo = self._writable(table, key)
        old = t.data.get(key)
        undo.append((t, key, old))
        if old is None:
            bisect.insort(t.keys, key)
        t.data[key] = bytes(value)

    def insert(self, table: Table, key: bytes, value: bytes) -> bool:
        if key in self._tables[table].data:
            return False
        self.put(table, key, value)
        return True

    def delete(self, table: Table, key: bytes) -> bool:
        t, undo = self._writable(table, key)
        old = t.data.pop(key, None)
        if old is None:
            return False
        undo.append((t, key, old))
        del t.keys[bisect.bisect_left(t.keys, key)]
        return True

    def discard(self, table: Table, key: bytes) -> None:
        self.delete(table, key)

    def scan(
        self, table: Table, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        # Re-bisect from the last key on every step, so writes between steps cannot skip keys.
        t = self._tables[table]
        if reverse:
            i = bisect.bisect_left(t.keys, end) - 1
            while i >= 0 and (key := t.keys[i]) >= start:
                yield key, t.data[key]
                i = bisect.bisect_left(t.keys, key) - 1
        else:
            i = bisect.bisect_left(t.keys, start)
            while i < len(t.keys) and (key := t.keys[i]) < end:
                yield key, t.data[key]
                i = bisect.bisect_right(t.keys, key)


def _undo(undo: _Undo) -> None:
    for t, key, old in reversed(undo):
        if old is None:
            del t.data[key]
            del t.keys[bisect.bisect_left(t.keys, key)]
        else:
            if key not in t.data:
                bisect.insort(t.keys, key)
            t.data[key] = old


class MemoryEngine:
    """Sorted in-memory tables with all-or-nothing writes (the `KvEngine` of the twin)."""

    def __init__(self) -> None:
        self._tables: dict[Table, _Table] | None = {table: _Table() for table in Table}
        self._frames: list[_MemoryTxn] = []
        """The transactions being run, innermost last: nested writes and reads join them."""

    @property
    def where(self) -> str:
        """Always `:memory:`."""
        return ":memory:"

    @property
    def concurrent_reads(self) -> bool:
        """Python lists change under a reader: one thread at a time."""
        return False

    def _open_tables(self) -> dict[Table, _Table]:
        if self._tables is None:
            raise StorageError("store :memory: is closed")
        return self._tables

    def read(self) -> AbstractContextManager[KvTxn]:
        """A read transaction (the twin is single-threaded, so it sees the latest state)."""
        if self._frames:
            return nullcontext(self._frames[-1])
        return nullcontext(_MemoryTxn(self._open_tables(), None))

    def snapshot(self, fn: Callable[[], T]) -> T:
        """Run `fn` read-only."""
        self._frames.append(_MemoryTxn(self._open_tables(), None))
        try:
            return fn()
        finally:
            self._frames.pop()

    def write(self, fn: Callable[[KvTxn], T]) -> T:
        """Run `fn`; if it raises, every change it made is undone (a nested write's too)."""
        tables = self._open_tables()
        parent = self._frames[-1].undo if self._frames else []
        if self._frames and parent is None:
            raise LocalProtocolError("a write inside a read-only snapshot")
        undo: _Undo = []
        self._frames.append(_MemoryTxn(tables, undo))
        try:
            value = fn(self._frames[-1])
        except BaseException:
            _undo(undo)
            raise
        finally:
            self._frames.pop()
        if parent is not None:
            parent.extend(undo)  # a nested write is undone with its parent
        return value

    def write_batch(self, calls: Sequence[Callable[[], object]]) -> list[Outcome]:
        """Each call in its own nested write; a call that raises is undone alone."""
        if self._frames:
            raise LocalProtocolError("a write batch inside a transaction")
        return [self._outcome(call) for call in calls]

    def stage_batch(
        self, calls: Sequence[Callable[[], object]]
    ) -> tuple[list[Outcome], StagedWrites | None]:
        """`write_batch`: the twin has nothing to sync, so it commits at once."""
        return self.write_batch(calls), None

    def commit_staged(self, batches: Sequence[StagedWrites]) -> None:
        """Never has anything to commit (`stage_batch` committed)."""
        if batches:
            raise LocalProtocolError("the in-memory store stages nothing")

    def _outcome(self, call: Callable[[], object]) -> Outcome:
        try:
            return Outcome(value=self.write(lambda _txn: call()))
        except Exception as exc:  # handed to the call's owner, not swallowed
            return Outcome(error=exc)

    def close(self) -> None:
        """Drop everything; idempotent."""
        self._tables = None


class MemoryStore(KvStore):
    """The whole `api.Store` in memory."""

    def __init__(self, *, relay_quota: RelayQuota = DEFAULT_RELAY_QUOTA) -> None:
        super().__init__(MemoryEngine(), MemoryBlobs(), relay_quota=relay_quota)
