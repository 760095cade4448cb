"""A good copy put over a damaged blob replaces it (SPEC §11.8.7: our own damaged blob is
fetched again from a sibling home and stored in its place), on both engines."""

from __future__ import annotations

import hashlib
import os

import pytest

from hearthmesh.protocol.errors import DamagedBlob
from hearthmesh.storage.blobs import FileBlobs, MemoryBlobs
from hearthmesh.storage.store import KvStore


def _damage(store: KvStore, digest: bytes) -> None:
    blobs = store._blobs
    if isinstance(blobs, MemoryBlobs):
        blobs._blobs[digest] = b"\x00" * len(blobs._blobs[digest])
    else:
        assert isinstance(blobs, FileBlobs)
        path = blobs._path(digest)
        path.write_bytes(bytes(len(path.read_bytes())))


def test_a_good_copy_replaces_a_damaged_blob_and_a_good_one_stays(store: KvStore) -> None:
    data = os.urandom(1024)
    digest = hashlib.sha256(data).digest()
    store.put_media(data, content_type="image/png", now_ms=1)
    store.put_media(data, content_type="image/png", now_ms=2)  # a good copy: nothing changes
    assert store.read_media(digest) == data
    _damage(store, digest)
    with pytest.raises(DamagedBlob):
        store.read_media(digest)
    store.put_media(data, content_type="image/png", now_ms=3)
    assert store.read_media(digest) == data
