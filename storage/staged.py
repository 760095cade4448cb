"""Staged writes: a write batch run on the event loop, committed later on the writer thread.

`LmdbEngine.stage_batch` runs a batch's calls on the calling thread against an `OverlayTxn`:
reads see the last committed snapshot with the batches staged before it laid over, in order,
and writes go into the batch's own `StagedWrites`. The writer thread then replays those writes
in one LMDB transaction and commits it (`LmdbEngine.commit_staged`, ARCHITECTURE §10). So the
batch's Python work (which touches the event loop's state) stays on the loop, and the loop
never waits out an fsync; LMDB's write transaction has one owner, the writer thread.

Owns: nothing shared. A `StagedWrites` is written by the thread that stages it and only read
once it is handed over; an `OverlayTxn` lives for one batch.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from .keys import Table
from .kv import KvTxn, check_key

__all__ = ["OverlayTxn", "StagedWrites"]

_GONE = None
"""A staged delete: the key is absent whatever the snapshot below says."""

_UNSEEN = object()
"""Not written by a staged batch: ask the one below."""


@dataclass(slots=True)
class _Writes:
    """One table's staged writes, with their keys kept sorted for range scans."""

    table: Table
    values: dict[bytes, bytes | None] = field(default_factory=dict)
    keys: list[bytes] = field(default_factory=list)

    def set(self, key: bytes, value: bytes | None) -> None:
        if key not in self.values:
            bisect.insort(self.keys, key)
        self.values[key] = value

    def drop(self, key: bytes) -> None:
        del self.values[key]
        del self.keys[bisect.bisect_left(self.keys, key)]

    def between(self, start: bytes, end: bytes) -> list[bytes]:
        return self.keys[bisect.bisect_left(self.keys, start) : bisect.bisect_left(self.keys, end)]


class StagedWrites:
    """What one staged batch wrote, per table: the value put, or `None` for a delete.

    Tables are keyed by `id(table)`: an Enum's own hash is a Python call, and the message path
    looks tables up a few dozen times per envelope."""

    __slots__ = ("tables",)

    def __init__(self) -> None:
        self.tables: dict[int, _Writes] = {}

    def __len__(self) -> int:
        return sum(len(writes.values) for writes in self.tables.values())

    def __bool__(self) -> bool:
        return any(writes.values for writes in self.tables.values())

    def of(self, table: Table) -> _Writes | None:
        """This batch's writes to `table`, if any."""
        return self.tables.get(id(table))

    def lookup(self, table: Table, key: bytes) -> object:
        """The value this batch wrote under `key` (None for a delete), or `_UNSEEN`."""
        writes = self.tables.get(id(table))
        if writes is None:
            return _UNSEEN
        return writes.values.get(key, _UNSEEN)

    def by_table(self) -> Iterator[tuple[Table, list[tuple[bytes, bytes]], list[bytes]]]:
        """Per table: the puts in key order (LMDB inserts sorted keys cheapest), the deletes."""
        for writes in self.tables.values():
            puts: list[tuple[bytes, bytes]] = []
            deletes: list[bytes] = []
            for key in writes.keys:
                value = writes.values[key]
                if value is None:
                    deletes.append(key)
                else:
                    puts.append((key, value))
            yield writes.table, puts, deletes


_Undo = list[tuple[Table, bytes, bool, bytes | None]]
"""(table, key, whether the batch had written the key before, the value it had written)."""


class OverlayTxn:
    """`KvTxn` for a staged batch: its own writes, over the batches staged before it (newest
    first), over a committed read snapshot. Nested writes are undone through `savepoint`."""

    __slots__ = ("_base", "_below", "_undo", "writes")

    def __init__(self, base: KvTxn, below: Sequence[StagedWrites]) -> None:
        self._base = base
        self._below = list(reversed(below))
        self.writes = StagedWrites()
        self._undo: list[_Undo] = []

    def savepoint(self) -> None:
        """Open a nested write: `rollback` undoes what is written from here on."""
        self._undo.append([])

    def release(self) -> None:
        """The nested write succeeded: its changes belong to the one around it."""
        done = self._undo.pop()
        if self._undo:
            self._undo[-1].extend(done)

    def rollback(self) -> None:
        """The nested write failed: restore what the batch had staged before it."""
        for table, key, had, value in reversed(self._undo.pop()):
            writes = self.writes.tables[id(table)]
            if had:
                writes.values[key] = value
            else:
                writes.drop(key)

    def _stage(self, table: Table, key: bytes, value: bytes | None) -> None:
        writes = self.writes.tables.get(id(table))
        if writes is None:
            writes = self.writes.tables[id(table)] = _Writes(table)
        if self._undo:
            had = key in writes.values
            self._undo[-1].append((table, key, had, writes.values.get(key)))
        writes.set(key, value)

    def get(self, table: Table, key: bytes) -> bytes | None:
        value = self.writes.lookup(table, key)
        if value is _UNSEEN:
            for staged in self._below:
                value = staged.lookup(table, key)
                if value is not _UNSEEN:
                    break
            else:
                return self._base.get(table, key)
        return cast(bytes | None, value)

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        check_key(key)
        self._stage(table, key, bytes(value))

    def insert(self, table: Table, key: bytes, value: bytes) -> bool:
        check_key(key)
        if self.get(table, key) is not None:
            return False
        self._stage(table, key, bytes(value))
        return True

    def delete(self, table: Table, key: bytes) -> bool:
        check_key(key)
        if self.get(table, key) is None:
            return False
        self._stage(table, key, _GONE)
        return True

    def discard(self, table: Table, key: bytes) -> None:
        check_key(key)
        self._stage(table, key, _GONE)  # a key absent below: its delete is a no-op at commit

    def scan(
        self, table: Table, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        laid: dict[bytes, bytes | None] = {}
        for staged in (*reversed(self._below), self.writes):  # oldest first: newer overrides
            writes = staged.of(table)
            if writes is not None:
                for key in writes.between(start, end):
                    laid[key] = writes.values[key]
        if not laid:
            yield from self._base.scan(table, start, end, reverse=reverse)
            return
        over = sorted(laid.items(), reverse=reverse)
        yield from _merge(self._base.scan(table, start, end, reverse=reverse), over, reverse)


def _merge(
    base: Iterator[tuple[bytes, bytes]],
    over: list[tuple[bytes, bytes | None]],
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """The snapshot's items with the staged ones laid over (same order; a staged key wins)."""

    def before(a: bytes, b: bytes) -> bool:
        return a > b if reverse else a < b

    at = 0
    for key, value in base:
        while at < len(over) and before(over[at][0], key):
            staged_key, staged = over[at]
            at += 1
            if staged is not None:
                yield staged_key, staged
        if at < len(over) and over[at][0] == key:
            staged = over[at][1]
            at += 1
            if staged is not None:
                yield key, staged
            continue
        yield key, value
    for staged_key, staged in over[at:]:
        if staged is not None:
            yield staged_key, staged
