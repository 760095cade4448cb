"""Which envelope kinds carry an encrypted body (SPEC §27.6), sans-I/O.

The rule is one predicate so the sender (which encrypts) and every reader (which opens) agree.
A kind a relay or a non-member must read stays in the clear: MEMBERSHIP (every member's home
folds it, the new member before it holds any room key), ROOM_KEY (its shares are Olm-encrypted
per device already) and PRIVATE (our user's own homes only). TYPING and PRESENCE are never
stored or gossiped: they go on Noise-encrypted streams to contacts' homes alone, and a Megolm
index per keystroke would rotate sessions and store replay marks (SPEC §27.14). Owns no
state.
"""

from __future__ import annotations

from typing import Final

from ..envelope import Kind

__all__ = ["ENCRYPTED_KINDS", "encrypts"]

ENCRYPTED_KINDS: Final = frozenset(
    {Kind.MESSAGE, Kind.EDIT, Kind.RECALL, Kind.REACTION, Kind.RECEIPT, Kind.PROFILE}
)
"""Kinds whose body is a user's content: Megolm-encrypted to the room's member devices."""


def encrypts(kind: Kind) -> bool:
    """Whether an envelope of `kind` carries an encrypted body (SPEC §27.6)."""
    return kind in ENCRYPTED_KINDS
