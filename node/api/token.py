"""The API bearer token: a random secret in DATA_DIR/api-token, readable by its owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from hearthmesh.protocol.errors import HearthError

__all__ = ["TOKEN_FILE", "TokenFileError", "create_token", "load_token"]

TOKEN_FILE: Final = "api-token"
_TOKEN_BYTES: Final = 32


class TokenFileError(HearthError):
    """The token file is missing, empty or readable by others."""


def create_token(data_dir: Path, *, force: bool = False) -> str:
    """Write a new token to `data_dir/api-token` with mode 0600; returns it.

    Raises:
        TokenFileError: the file exists and `force` is not set.
    """
    path = data_dir / TOKEN_FILE
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    if force:
        path.unlink(missing_ok=True)
    try:
        # O_EXCL: never follow or reuse a file someone else created; 0600 from the start.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TokenFileError(f"{path} exists (use --force to replace it)") from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(token + "\n")
    return token


def load_token(data_dir: Path) -> str:
    """Read the token.

    Raises:
        TokenFileError: missing, empty, or readable by group or others.
    """
    path = data_dir / TOKEN_FILE
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise TokenFileError(f"{path} is missing (run `hearthmesh init` first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"{path} is unreadable: {exc}") from None
    if mode & 0o077:
        raise TokenFileError(f"{path} is readable by others (chmod 600 {path})")
    if not token:
        raise TokenFileError(f"{path} is empty")
    return token
