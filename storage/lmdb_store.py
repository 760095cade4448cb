"""The LMDB store: one environment per node, named sub-databases only (ARCHITECTURE §10).

Settings, and why:
- `sync=True, metasync=True` (LMDB's defaults), `writemap=False`, `map_async=False`: a commit
  returns only after fdatasync of its data and meta pages, so an acknowledged append survives
  kill -9, an OS crash and power loss. Group commit (`append_many`, `AsyncStore`) buys the
  throughput back by sharing one sync between many appends.
- The map grows by doubling whenever a write hits `MapFullError`; the transaction is retried
  from scratch, so no caller ever sees it. A write batch grows the map beforehand once it is
  half full, since its calls cannot be re-run (see `write_batch`).
- Transactions are short and never span an await; readers use MVCC snapshots and never block
  the writer, so `AsyncStore` reads on a second thread while its writer commits.
No `lmdb` type or exception leaves this module: errors become `StorageError` naming the path.

State: the LMDB environment and its handles; the batches staged by `write_batch` and not yet
committed (under `_staged_lock`: staged on the caller's thread, committed by `AsyncStore` inline
or on its writer thread); each thread's open transaction frames (thread-local); the read gate
that holds snapshots while the map grows; and the failure that ends the store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import lmdb

from hearthmesh.protocol.errors import LocalProtocolError, StorageError

from .absent import restore_index_txn
from .api import DEFAULT_RELAY_QUOTA, RelayQuota
from .blobs import FileBlobs
from .history import fill_sender_index_txn
from .keys import SCHEMA_KEY, SCHEMA_VERSION, Table, pack_u32, unpack_u32
from .kv import KvTxn, Outcome, T, check_key
from .media_refs import fill_media_refs_txn
from .relay import fill_relay_shares_txn
from .sequences import fill_sequence_floors_txn
from .staged import OverlayTxn, StagedWrites
from .store import KvStore

__all__ = ["DEFAULT_MAP_SIZE_BYTES", "MAX_MAP_SIZE_BYTES", "LmdbEngine", "LmdbStore"]

DEFAULT_MAP_SIZE_BYTES: Final = 1 << 30
MAX_MAP_SIZE_BYTES: Final = 1 << 40
_MEDIA_DIR: Final = "media"
_LMDB_FILES: Final = frozenset({"data.mdb", "lock.mdb"})

_open_paths: set[str] = set()
_open_paths_lock = threading.Lock()


class _LmdbTxn:
    """`KvTxn` over one lmdb transaction."""

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[Table, lmdb._Database]) -> None:
        self._txn = txn
        self._dbs = dbs

    @property
    def raw(self) -> lmdb.Transaction[bytes]:
        return self._txn

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[table])

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        check_key(key)
        self._txn.put(key, value, db=self._dbs[table])

    def insert(self, table: Table, key: bytes, value: bytes) -> bool:
        check_key(key)
        return self._txn.put(key, value, overwrite=False, db=self._dbs[table])

    def delete(self, table: Table, key: bytes) -> bool:
        check_key(key)
        return self._txn.delete(key, db=self._dbs[table])

    def discard(self, table: Table, key: bytes) -> None:
        self.delete(table, key)

    def scan(
        self, table: Table, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor(self._dbs[table])
        try:
            if reverse:
                found = cursor.prev() if cursor.set_range(end) else cursor.last()
                while found:
                    key = cursor.key()
                    if key < start:
                        break
                    yield key, cursor.value()
                    found = cursor.prev()
            else:
                found = cursor.set_range(start)
                while found:
                    key = cursor.key()
                    if key >= end:
                        break
                    yield key, cursor.value()
                    found = cursor.next()
        finally:
            cursor.close()


def _check_directory(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise StorageError(f"{path} is not a hearthmesh store: it is not a directory")
    if path.is_dir():
        names = {entry.name for entry in path.iterdir()}
        if names and "data.mdb" not in names:
            raise StorageError(
                f"{path} is not a hearthmesh store: a non-empty directory without data.mdb"
            )


class _ReadGate:
    """Growing the map invalidates every open transaction of the process (py-lmdb closes them),
    so snapshots on other threads hold the gate shared and a resize holds it alone. Every read
    passes it, so a snapshot's way through costs one lock each way and no Condition call
    unless a resize is under way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._readers = 0
        self._resizing = False

    def enter(self) -> None:
        """A snapshot opens (after any resize under way)."""
        with self._lock:
            if self._resizing:
                self._changed.wait_for(lambda: not self._resizing)
            self._readers += 1

    def leave(self) -> None:
        """A snapshot `enter` opened is closed."""
        with self._lock:
            self._readers -= 1
            if self._resizing and not self._readers:  # only a resize waits for no readers
                self._changed.notify_all()

    @contextmanager
    def resizing(self) -> Iterator[None]:
        with self._lock:
            self._resizing = True
            self._changed.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._lock:
                self._resizing = False
                self._changed.notify_all()


class _Snapshot:
    """A read-only transaction under the read gate, closed on exit; LMDB's errors, from its
    opening or from the reads inside, become `StorageError`. A class rather than a generator's
    context manager, since every read of the store opens one."""

    __slots__ = ("_dbs", "_env", "_gate", "_path", "_txn")

    def __init__(
        self, env: lmdb.Environment, dbs: dict[Table, lmdb._Database], gate: _ReadGate, path: Path
    ) -> None:
        self._env = env
        self._dbs = dbs
        self._gate = gate
        self._path = path

    def __enter__(self) -> _LmdbTxn:
        self._gate.enter()
        try:
            self._txn = self._env.begin()
        except lmdb.Error as exc:
            self._gate.leave()
            raise StorageError(f"read from store {self._path} failed: {exc}") from None
        except BaseException:
            self._gate.leave()
            raise
        return _LmdbTxn(self._txn, self._dbs)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        try:
            self._txn.abort()
        except lmdb.Error as failed:
            exc = exc or failed
        finally:
            self._gate.leave()
        if isinstance(exc, lmdb.Error):
            raise StorageError(f"read from store {self._path} failed: {exc}") from None


@dataclass(slots=True)
class _Frame:
    """A transaction this thread is in: batch calls and nested writes join the innermost."""

    view: _LmdbTxn | OverlayTxn
    writable: bool


class LmdbEngine:
    """The `KvEngine` over one LMDB environment in the directory `path`."""

    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE_BYTES) -> None:
        self._path = path
        _check_directory(path)
        self._key = str(path.resolve())
        self._local = threading.local()
        self._gate = _ReadGate()
        self._grow_next = False
        self._staged: list[StagedWrites] = []
        """Batches staged and not yet committed, oldest first (`stage_batch`)."""
        self._staged_lock = threading.Lock()
        self._failed: StorageError | None = None
        """A staged commit that failed: what was staged over it can never commit."""
        with _open_paths_lock:
            if self._key in _open_paths:
                raise StorageError(f"store {path} is already open in this process")
            _open_paths.add(self._key)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._env: lmdb.Environment | None = lmdb.open(
                str(path),
                map_size=map_size,
                subdir=True,
                max_dbs=len(Table),
                mode=0o600,
                sync=True,
                metasync=True,
                writemap=False,
                map_async=False,
                lock=True,
            )
        except (OSError, lmdb.Error) as exc:
            self._forget_path()
            raise StorageError(f"cannot open store {path}: {exc}") from None
        try:
            self._dbs = self._open_tables(self._env)
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> str:
        """The environment's directory."""
        return str(self._path)

    def _forget_path(self) -> None:
        with _open_paths_lock:
            _open_paths.discard(self._key)

    def _open_tables(self, env: lmdb.Environment) -> dict[Table, lmdb._Database]:
        """Create a new store's tables, or check the schema of an existing one."""
        try:
            with env.begin(write=True) as txn:
                existing = {key for key, _ in txn.cursor()}
                if existing and Table.SCHEMA.value not in existing:
                    raise StorageError(
                        f"{self._path} is an LMDB environment but not a hearthmesh store"
                    )
                dbs = {table: env.open_db(table.value, txn=txn) for table in Table}
                stored = txn.get(SCHEMA_KEY, db=dbs[Table.SCHEMA])
                if stored is None:
                    if existing:
                        raise StorageError(f"{self._path} has no schema version")
                    txn.put(SCHEMA_KEY, pack_u32(SCHEMA_VERSION), db=dbs[Table.SCHEMA])
                elif len(stored) != 4 or unpack_u32(stored) != SCHEMA_VERSION:
                    found = unpack_u32(stored) if len(stored) == 4 else stored.hex()
                    raise StorageError(
                        f"{self._path} has schema version {found}; this build reads only "
                        f"version {SCHEMA_VERSION} (a newer hearthmesh wrote it?)"
                    )
        except lmdb.Error as exc:
            raise StorageError(f"{self._path} is not a hearthmesh store: {exc}") from None
        return dbs

    def _live_env(self) -> lmdb.Environment:
        if self._env is None:
            raise StorageError(f"store {self._path} is closed")
        return self._env

    @property
    def concurrent_reads(self) -> bool:
        """LMDB readers never block (nor are blocked by) the writer."""
        return True

    def _joined(self) -> list[_Frame]:
        """This thread's open transactions, innermost last (a batch's, nested writes')."""
        frames: list[_Frame] | None = getattr(self._local, "frames", None)
        if frames is None:
            frames = self._local.frames = []
        return frames

    def read(self) -> AbstractContextManager[KvTxn]:
        """A read-only snapshot, or the transaction this thread is already in."""
        frames = self._joined()
        if frames:
            return nullcontext(frames[-1].view)
        return self._read()

    def _read(self) -> _Snapshot:
        return _Snapshot(self._live_env(), self._dbs, self._gate, self._path)

    def snapshot(self, fn: Callable[[], T]) -> T:
        """Run `fn` with all its reads in one snapshot; it may not write."""
        frames = self._joined()
        with self._read() as view:
            frames.append(_Frame(view, writable=False))
            try:
                return fn()
            finally:
                frames.pop()

    def write(self, fn: Callable[[KvTxn], T]) -> T:
        """One write transaction, committed durably; grows the map and retries when full.

        Inside a batch it is a nested transaction that commits with the batch.
        """
        env = self._live_env()
        frames = self._joined()
        if frames:
            return self._nested(env, frames, fn)
        self._check_nothing_staged()
        while True:
            try:
                with env.begin(write=True) as txn:  # commits on success, aborts on exception
                    frames.append(_Frame(_LmdbTxn(txn, self._dbs), writable=True))
                    try:
                        return fn(frames[-1].view)
                    finally:
                        frames.pop()
            except lmdb.MapFullError:
                self._grow(env)
            except lmdb.Error as exc:
                raise StorageError(f"write to store {self._path} failed: {exc}") from None

    def _check_nothing_staged(self) -> None:
        """A write of its own would miss (and be overwritten by) the batches staged before it."""
        if self._staged:
            raise LocalProtocolError("a write beside staged batches not yet committed")

    def _nested(self, env: lmdb.Environment, frames: list[_Frame], fn: Callable[[KvTxn], T]) -> T:
        parent = frames[-1]
        if not parent.writable:
            raise LocalProtocolError("a write inside a read-only snapshot")
        if isinstance(parent.view, OverlayTxn):
            return self._nested_staged(frames, parent.view, fn)
        try:
            child = env.begin(write=True, parent=parent.view.raw)
        except lmdb.Error as exc:
            raise StorageError(f"write to store {self._path} failed: {exc}") from None
        frames.append(_Frame(_LmdbTxn(child, self._dbs), writable=True))
        try:
            value = fn(frames[-1].view)
        except BaseException:
            child.abort()
            raise
        finally:
            frames.pop()
        try:
            child.commit()
        except lmdb.Error as exc:
            raise StorageError(f"write to store {self._path} failed: {exc}") from None
        return value

    @staticmethod
    def _nested_staged(frames: list[_Frame], view: OverlayTxn, fn: Callable[[KvTxn], T]) -> T:
        view.savepoint()
        frames.append(_Frame(view, writable=True))
        try:
            value = fn(view)
        except BaseException:
            view.rollback()
            raise
        finally:
            frames.pop()
        view.release()
        return value

    def write_batch(self, calls: Sequence[Callable[[], object]]) -> list[Outcome]:
        """All `calls` in one transaction, each in its own nested one; one durable commit."""
        env = self._live_env()
        frames = self._joined()
        if frames:
            raise LocalProtocolError("a write batch inside a transaction")
        self._check_nothing_staged()
        self._grow_if_half_full(env)
        outcomes: list[Outcome] = []
        try:
            with env.begin(write=True) as txn:
                frames.append(_Frame(_LmdbTxn(txn, self._dbs), writable=True))
                try:
                    outcomes = [self._outcome(env, frames, call) for call in calls]
                finally:
                    frames.pop()
        except lmdb.Error as exc:
            failed = StorageError(f"write to store {self._path} failed: {exc}")
            return [Outcome(error=failed) for _ in calls]
        return outcomes

    def stage_batch(
        self, calls: Sequence[Callable[[], object]]
    ) -> tuple[list[Outcome], StagedWrites]:
        """`write_batch`'s calls run here, over the committed snapshot and the batches staged
        before; their writes are kept for `commit_staged` (on the writer thread) to commit.

        An outcome is final only once its batch committed: until then nobody may act on it.

        Raises:
            StorageError: a staged commit failed earlier (nothing can be staged over it).
        """
        env = self._live_env()
        frames = self._joined()
        if frames:
            raise LocalProtocolError("a write batch inside a transaction")
        if self._failed is not None:
            raise self._failed
        # Copied before the snapshot opens: a batch committed in between is then in both,
        # which reads the same; copied after, it could be in neither.
        with self._staged_lock:
            below = list(self._staged)
        with self._read() as base:
            view = OverlayTxn(base, below)
            frames.append(_Frame(view, writable=True))
            try:
                outcomes = [self._outcome(env, frames, call) for call in calls]
            finally:
                frames.pop()
        if view.writes:  # a batch that wrote nothing lays nothing over the snapshot
            with self._staged_lock:
                self._staged.append(view.writes)
        return outcomes, view.writes

    def commit_staged(self, batches: Sequence[StagedWrites]) -> None:
        """Commit staged batches (the oldest ones, in order) in one durable transaction; the
        writer thread's half of `stage_batch`. Map growth replays them, so no call re-runs.

        Raises:
            StorageError: the commit failed; every batch staged since fails with it.
        """
        if self._failed is not None:
            raise self._failed
        env = self._live_env()
        try:
            while True:
                try:
                    with env.begin(write=True) as txn:  # commits on success
                        for batch in batches:
                            for table, puts, deletes in batch.by_table():
                                db = self._dbs[table]
                                for key in deletes:
                                    txn.delete(key, db=db)
                                if len(puts) == 1:  # most tables a message writes: no cursor
                                    txn.put(*puts[0], db=db)
                                elif puts:
                                    txn.cursor(db).putmulti(puts)
                    break
                except lmdb.MapFullError:
                    self._grow(env)
        except (lmdb.Error, StorageError) as exc:
            self._failed = StorageError(f"write to store {self._path} failed: {exc}")
            raise self._failed from None
        with self._staged_lock:
            for batch in batches:
                if batch:
                    self._staged.remove(batch)

    def _outcome(
        self, env: lmdb.Environment, frames: list[_Frame], call: Callable[[], object]
    ) -> Outcome:
        try:
            return Outcome(value=self._nested(env, frames, lambda _txn: call()))
        except lmdb.MapFullError:
            # The map cannot grow under an open transaction: this call fails, the batch
            # commits what fitted, and the next batch finds the map grown.
            self._grow_next = True
            return Outcome(error=StorageError(f"store {self._path} was full; try again"))
        except lmdb.Error as exc:
            return Outcome(error=StorageError(f"write to store {self._path} failed: {exc}"))
        except Exception as exc:  # handed to the call's owner, not swallowed
            return Outcome(error=exc)

    def _grow_if_half_full(self, env: lmdb.Environment) -> None:
        info = env.info()
        used = (info["last_pgno"] + 1) * env.stat()["psize"]
        if self._grow_next or used * 2 > info["map_size"]:
            self._grow_next = False
            self._grow(env)

    def _grow(self, env: lmdb.Environment) -> None:
        size = env.info()["map_size"]
        if size >= MAX_MAP_SIZE_BYTES:
            raise StorageError(f"store {self._path} reached {size} bytes, the map size limit")
        try:
            with self._gate.resizing():
                env.set_mapsize(min(size * 2, MAX_MAP_SIZE_BYTES))
        except lmdb.Error as exc:
            raise StorageError(f"cannot grow the map of store {self._path}: {exc}") from None

    @property
    def map_size(self) -> int:
        """Current map size in bytes (for tests and status)."""
        return self._live_env().info()["map_size"]

    def close(self) -> None:
        """Close the environment; idempotent."""
        if self._env is not None:
            self._env.close()
            self._env = None
            self._forget_path()


class LmdbStore(KvStore):
    """The whole `api.Store` in one LMDB environment; media blobs in `path/media/`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE_BYTES,
        relay_quota: RelayQuota = DEFAULT_RELAY_QUOTA,
    ) -> None:
        """Open (or create) the store in directory `path`.

        Raises:
            StorageError: `path` is not a hearthmesh store, has an unknown schema version, is
                already open in this process, or cannot be opened; the message names it.
        """
        root = Path(path)
        self._lmdb = LmdbEngine(root, map_size=map_size)
        super().__init__(self._lmdb, FileBlobs(root / _MEDIA_DIR), relay_quota=relay_quota)
        try:  # a store written before these indexes: fill them once (cheap when full)
            self._lmdb.write(fill_sender_index_txn)
            self._lmdb.write(fill_media_refs_txn)
            self._lmdb.write(fill_relay_shares_txn)
            self._lmdb.write(fill_sequence_floors_txn)  # after the sender index it reads
            self._lmdb.write(restore_index_txn)  # a marker's index row, lost to damage
        except BaseException:
            self._lmdb.close()
            raise

    @property
    def map_size(self) -> int:
        """Current LMDB map size in bytes."""
        return self._lmdb.map_size
