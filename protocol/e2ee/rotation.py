"""When a sending device starts a new Megolm session in a room (SPEC §27.9), sans-I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_ROTATION", "Rotation", "needs_rotation"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotation:
    """The limits of one outbound Megolm session."""

    max_messages: int = 100
    """`megolm_rotate_messages`: messages per session."""
    max_age_ms: int = 7 * 24 * 3600 * 1000
    """`megolm_rotate_ms`: a week."""


DEFAULT_ROTATION: Final = Rotation()


def needs_rotation(
    *,
    created_ms: int,
    messages: int,
    now_ms: int,
    member_removed_since: bool,
    limits: Rotation = DEFAULT_ROTATION,
) -> bool:
    """True when the next message needs a new session: a member left or was removed since the
    session was shared, it carried `max_messages`, or it is older than `max_age_ms`."""
    return (
        member_removed_since
        or messages >= limits.max_messages
        or now_ms - created_ms >= limits.max_age_ms
    )
