"""The 32-byte key that encrypts every vodozemac pickle (SPEC §27.8), kept outside the store.

It lives in `DATA_DIR/e2ee-pickle-key`, mode 0600 from creation, so a copy of the LMDB files
alone opens no session. State: that file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from hearthmesh.protocol.errors import StorageError

__all__ = ["PICKLE_KEY_BYTES", "PICKLE_KEY_FILE", "load_or_create_pickle_key"]

PICKLE_KEY_FILE: Final = "e2ee-pickle-key"
PICKLE_KEY_BYTES: Final = 32


def load_or_create_pickle_key(data_dir: Path) -> bytes:
    """The pickle key of `data_dir`, created on first use.

    Raises:
        StorageError: the file has another length or is readable by group or others.
    """
    path = data_dir / PICKLE_KEY_FILE
    try:
        # O_EXCL: never reuse a file someone else created; 0600 from the start.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    key = secrets.token_bytes(PICKLE_KEY_BYTES)
    with os.fdopen(fd, "wb") as file:
        file.write(key)
        file.flush()
        os.fsync(file.fileno())
    return key


def _read(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise StorageError(f"{path} is readable by others (chmod 600 {path})")
    key = path.read_bytes()
    if len(key) != PICKLE_KEY_BYTES:
        raise StorageError(f"{path} holds {len(key)} bytes, not {PICKLE_KEY_BYTES}")
    return key
