"""Per-room history digest (SPEC §21.9): one hash over a room's ordered event ids.

Two devices that hold the same events in the same history order (SPEC §4.5) compute the same
digest, so comparing 32 bytes tells whether a repair (SPEC §21) is needed at all. The digest is
incremental: a store can keep the running state and feed each id as the history grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from .envelope import MessageId
from .errors import LocalProtocolError

__all__ = ["HISTORY_DIGEST_DOMAIN", "MESSAGE_ID_BYTES", "HistoryDigest", "history_digest"]

HISTORY_DIGEST_DOMAIN: Final = b"hearthmesh/history-digest/v0\x00"
"""Domain separation prefix hashed before the first id (SPEC §21.9)."""

MESSAGE_ID_BYTES: Final = 32


class HistoryDigest:
    """SHA-256 over `HISTORY_DIGEST_DOMAIN` followed by each 32-byte id in history order."""

    __slots__ = ("_count", "_hash")

    def __init__(self) -> None:
        self._hash = hashlib.sha256(HISTORY_DIGEST_DOMAIN)
        self._count = 0

    @property
    def count(self) -> int:
        """How many ids have been fed so far."""
        return self._count

    def update(self, message_id: MessageId) -> None:
        """Append the next id of the history.

        Raises:
            LocalProtocolError: `message_id` is not 32 bytes (a caller bug).
        """
        if len(message_id) != MESSAGE_ID_BYTES:
            raise LocalProtocolError(f"a message id is 32 bytes, got {len(message_id)}")
        self._hash.update(message_id)
        self._count += 1

    def copy(self) -> HistoryDigest:
        """An independent copy of the running state (to digest a prefix and keep going)."""
        other = HistoryDigest.__new__(HistoryDigest)
        other._hash = self._hash.copy()
        other._count = self._count
        return other

    def digest(self) -> bytes:
        """The 32-byte digest of the ids fed so far (the state is not consumed)."""
        return self._hash.copy().digest()

    def hexdigest(self) -> str:
        """`digest()` as 64 lowercase hex characters."""
        return self.digest().hex()


def history_digest(ids: Iterable[MessageId]) -> bytes:
    """The digest of a whole history, `ids` in history order (SPEC §21.9).

    Raises:
        LocalProtocolError: an id is not 32 bytes.
    """
    running = HistoryDigest()
    for message_id in ids:
        running.update(message_id)
    return running.digest()
