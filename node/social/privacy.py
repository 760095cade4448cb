"""Our user's privacy choices (SPEC §32.3-§32.5): whom they blocked, who sees their presence,
and which message requests they accepted.

State owned: the block list and the presence visibility in memory, loaded from the store's
settings at start and written through in the same write batch (`Privacy.load`,
`Privacy.set_blocked`), so the arrival rules read a set, never the store, per envelope. Accepted
message requests are one setting per room, read only when a conversation list is drawn.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import QuotaExceeded
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Store

__all__ = ["MAX_BLOCKED", "Privacy", "Visibility"]

MAX_BLOCKED: Final = 1024
"""Users one user may block: the list is one setting, read whole at start."""
_BLOCKED_SETTING: Final = "social.blocked"
"""The blocked users' ids, 32 bytes each, concatenated."""
_VISIBILITY_SETTING: Final = "social.presence"
_ACCEPTED_SETTING: Final = "social.accepted."
"""+ the room id in hex: our user accepted this message request (SPEC §32.5)."""


class Visibility(StrEnum):
    """Who learns our user's presence, last seen and typing (SPEC §32.4)."""

    CONTACTS = "contacts"
    NOBODY = "nobody"


class Privacy:
    """Our user's block list and presence visibility."""

    def __init__(self) -> None:
        self._blocked: set[UserId] = set()
        self.visibility = Visibility.CONTACTS

    def load(self, store: Store) -> None:
        """Read the choices the store holds; runs in a store transaction at start."""
        data = store.get_setting(_BLOCKED_SETTING) or b""
        self._blocked = {UserId(data[i : i + 32]) for i in range(0, len(data), 32)}
        held = store.get_setting(_VISIBILITY_SETTING)
        if held is not None and held.decode() in {v.value for v in Visibility}:
            self.visibility = Visibility(held.decode())

    def blocks(self, user: UserId) -> bool:
        """Has our user blocked `user`? Read by the arrival rules on every envelope."""
        return user in self._blocked

    def blocked(self) -> list[UserId]:
        return sorted(self._blocked)

    def set_blocked(self, store: Store, user: UserId, *, blocked: bool) -> bool:
        """Block or unblock `user`, in a store write batch; False if nothing changed.

        Raises:
            QuotaExceeded: `MAX_BLOCKED` users are blocked already.
        """
        if blocked == (user in self._blocked):
            return False
        if blocked and len(self._blocked) >= MAX_BLOCKED:
            raise QuotaExceeded(f"at most {MAX_BLOCKED} users are blocked")
        changed = self._blocked | {user} if blocked else self._blocked - {user}
        store.set_setting(_BLOCKED_SETTING, b"".join(sorted(changed)))
        self._blocked = changed
        return True

    def set_visibility(self, store: Store, visibility: Visibility) -> None:
        """Who sees our presence from now on; in a store write batch."""
        store.set_setting(_VISIBILITY_SETTING, visibility.value.encode())
        self.visibility = visibility


def accept_request(store: Store, room: RoomId) -> None:
    """Our user accepted the message request of `room` (or started it): it is a conversation."""
    store.set_setting(_ACCEPTED_SETTING + room.hex(), b"1")


def is_accepted(store: Store, room: RoomId) -> bool:
    return store.get_setting(_ACCEPTED_SETTING + room.hex()) is not None
