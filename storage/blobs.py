"""Content-addressed media blobs: files beside the LMDB environment, or a dict for tests.

A blob is written to a temporary file, fsynced and renamed into `media/ab/abcdef...` before its
metadata is committed, so committed metadata always points at a complete file. A blob that no
longer matches its address is `DamagedBlob`, one whose file cannot be read `UnreadableItem` (that
blob alone); a blob that cannot be written is `StorageError` (the store failed).

State: the blob files under `root` (`FileBlobs`) or a dict (`MemoryBlobs`), no other; each
file is whole before its name exists, so any thread may read while another writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Protocol

from hearthmesh.protocol.errors import DamagedBlob, StorageError, UnreadableItem

from .keys import blob_name

__all__ = ["BlobStore", "FileBlobs", "MemoryBlobs"]


class BlobStore(Protocol):
    """Where blob contents live; the digest is the sha-256 of the content."""

    def write(self, digest: bytes, data: bytes) -> None:
        """Store `data` durably under `digest`: a no-op if a copy is present (it is not read:
        a re-upload or a second fetch of a held blob costs one look-up)."""
        ...

    def write_over_damaged(self, digest: bytes, data: bytes) -> None:
        """`write`, but a copy that no longer matches its address is replaced (the repair of
        SPEC §11.8.7 reads the held copy; a good one, or one that cannot be read now, stays)."""
        ...

    def read(self, digest: bytes) -> bytes | None:
        """The content, checked against `digest`; None if absent."""
        ...

    def delete(self, digest: bytes) -> None:
        """Remove the content if present."""
        ...


def _check(digest: bytes, data: bytes, where: str) -> bytes:
    if hashlib.sha256(data).digest() != digest:
        message = f"media blob {where} does not match its sha-256 address"
        raise DamagedBlob(message, item=where, digest=digest)
    return data


class FileBlobs:
    """Blobs as files under `root` (`root/ab/abcdef...`)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, digest: bytes) -> Path:
        return self._root / blob_name(digest)

    def write(self, digest: bytes, data: bytes) -> None:
        """Write unless the file exists (one stat)."""
        if not self._path(digest).exists():
            self._replace(digest, data)

    def write_over_damaged(self, digest: bytes, data: bytes) -> None:
        """Write unless a file that matches `digest`, or cannot be read now, exists."""
        if not self._path(digest).exists() or self._damaged(digest):
            self._replace(digest, data)

    def _replace(self, digest: bytes, data: bytes) -> None:
        """Write, fsync, rename: a crash leaves the old state or the whole blob."""
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise StorageError(f"cannot write media blob {path}: {exc}") from None

    def read(self, digest: bytes) -> bytes | None:
        """The blob's bytes, verified."""
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # this one file: the environment may be fine
            raise UnreadableItem(f"cannot read media blob {path}: {exc}", item=str(path)) from None
        return _check(digest, data, str(path))

    def _damaged(self, digest: bytes) -> bool:
        """The file's bytes no longer match `digest` (one that cannot be read now is kept:
        that may pass, and its bytes may be good)."""
        try:
            self.read(digest)
        except DamagedBlob:
            return True
        except UnreadableItem:
            pass
        return False

    def delete(self, digest: bytes) -> None:
        """Unlink the file if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self._path(digest).unlink()


class MemoryBlobs:
    """Blobs in a dict, for the in-memory twin."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}

    def write(self, digest: bytes, data: bytes) -> None:
        """Keep a copy unless one is held."""
        self._blobs.setdefault(digest, bytes(data))

    def write_over_damaged(self, digest: bytes, data: bytes) -> None:
        """Keep a copy, in place of a damaged one."""
        held = self._blobs.get(digest)
        if held is None or hashlib.sha256(held).digest() != digest:
            self._blobs[digest] = bytes(data)

    def read(self, digest: bytes) -> bytes | None:
        """The copy, verified."""
        data = self._blobs.get(digest)
        return None if data is None else _check(digest, data, digest.hex())

    def delete(self, digest: bytes) -> None:
        """Forget it."""
        self._blobs.pop(digest, None)
