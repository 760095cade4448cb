"""A good copy stored by the repair path (`put_media(over_damaged=True)`) replaces a damaged
blob (SPEC §11.8.7: our own damaged blob is fetched again from a sibling home and stored in
its place), on both engines; a plain `put_media` of a blob already held keeps the held copy
and does not read it (a re-upload or a second fetch costs one look-up, not a read and a hash)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hearthmesh.protocol.errors import DamagedBlob
from hearthmesh.storage.blobs import FileBlobs, MemoryBlobs
from hearthmesh.storage.store import KvStore

from .conftest import open_store


def _damage(store: KvStore, digest: bytes) -> None:
    blobs = store._blobs
    if isinstance(blobs, MemoryBlobs):
        blobs._blobs[digest] = b"\x00" * len(blobs._blobs[digest])
    else:
        assert isinstance(blobs, FileBlobs)
        path = blobs._path(digest)
        path.write_bytes(bytes(len(path.read_bytes())))


def test_a_good_copy_replaces_a_damaged_blob_on_repair_and_a_good_one_stays(
    store: KvStore,
) -> None:
    data = os.urandom(1024)
    digest = hashlib.sha256(data).digest()
    store.put_media(data, content_type="image/png", now_ms=1)
    store.put_media(data, content_type="image/png", now_ms=2)  # a good copy: nothing changes
    store.put_media(data, content_type="image/png", now_ms=2, over_damaged=True)
    assert store.read_media(digest) == data
    _damage(store, digest)
    store.put_media(data, content_type="image/png", now_ms=3)  # the plain write: kept as held
    with pytest.raises(DamagedBlob):
        store.read_media(digest)
    store.put_media(data, content_type="image/png", now_ms=4, over_damaged=True)
    assert store.read_media(digest) == data


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and the like (`/proc/self/io` rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_plain_write_of_a_held_blob_does_not_read_the_held_file(tmp_path: Path) -> None:
    store = open_store("lmdb", tmp_path)
    try:
        size = 8 << 20
        data = os.urandom(size)
        store.put_media(data, content_type="video/mp4", now_ms=1)
        before = _bytes_read()
        store.put_media(data, content_type="video/mp4", now_ms=2)
        plain = _bytes_read() - before
        before = _bytes_read()
        store.put_media(data, content_type="video/mp4", now_ms=3, over_damaged=True)
        repair = _bytes_read() - before
    finally:
        store.close()
    assert plain < size // 8  # LMDB's own reads are through its map: no read(2) calls
    assert repair >= size  # the control: reading the held copy shows in the count
