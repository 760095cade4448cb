"""The LMDB store: one environment per node, named sub-databases only (DESIGN §8).

Settings, and why:
- `sync=True, metasync=True` (LMDB's defaults), `writemap=False`, `map_async=False`: a commit
  returns only after fdatasync of its data and meta pages, so an acknowledged append survives
  kill -9, an OS crash and power loss. Group commit (`append_many`, `AsyncStore`) buys the
  throughput back by sharing one sync between many appends.
- The map grows by doubling whenever a write hits `MapFullError`; the transaction is retried
  from scratch, so no caller ever sees it.
- Transactions are short and never span an await; readers use MVCC snapshots and never block
  the writer. A store is used from one thread at a time (node/ goes through `AsyncStore`).
No `lmdb` type or exception leaves this module: errors become `StorageError` naming the path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Final

import lmdb

from hearthmesh.protocol.errors import StorageError

from .api import DEFAULT_RELAY_QUOTA, RelayQuota
from .blobs import FileBlobs
from .history import fill_sender_index_txn
from .keys import SCHEMA_KEY, SCHEMA_VERSION, Table, pack_u32, unpack_u32
from .kv import KvTxn, T, check_key
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


class LmdbEngine:
    """The `KvEngine` over one LMDB environment in the directory `path`."""

    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE_BYTES) -> None:
        self._path = path
        _check_directory(path)
        self._key = str(path.resolve())
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

    def read(self) -> AbstractContextManager[KvTxn]:
        """A read-only snapshot."""
        return self._read()

    @contextmanager
    def _read(self) -> Iterator[KvTxn]:
        env = self._live_env()
        try:
            txn = env.begin()
            try:
                yield _LmdbTxn(txn, self._dbs)
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise StorageError(f"read from store {self._path} failed: {exc}") from None

    def write(self, fn: Callable[[KvTxn], T]) -> T:
        """One write transaction, committed durably; grows the map and retries when full."""
        env = self._live_env()
        while True:
            try:
                with env.begin(write=True) as txn:  # commits on success, aborts on exception
                    return fn(_LmdbTxn(txn, self._dbs))
            except lmdb.MapFullError:
                self._grow(env)
            except lmdb.Error as exc:
                raise StorageError(f"write to store {self._path} failed: {exc}") from None

    def _grow(self, env: lmdb.Environment) -> None:
        size = env.info()["map_size"]
        if size >= MAX_MAP_SIZE_BYTES:
            raise StorageError(f"store {self._path} reached {size} bytes, the map size limit")
        try:
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
        try:  # a store written before the by-sender index: fill it once (cheap when full)
            self._lmdb.write(fill_sender_index_txn)
        except BaseException:
            self._lmdb.close()
            raise

    @property
    def map_size(self) -> int:
        """Current LMDB map size in bytes."""
        return self._lmdb.map_size
