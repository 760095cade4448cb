"""When a sending device starts a new Megolm session in a room (SPEC §27.9, §27.11.3),
sans-I/O."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from ..identity import UserId

__all__ = ["DEFAULT_ROTATION", "Rotation", "needs_rotation", "owes_a_home_that_refuses"]


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


def owes_a_home_that_refuses(
    *, receiving: Iterable[UserId], owed: Collection[UserId], holding: Collection[UserId]
) -> bool:
    """Would giving the session to devices of `receiving` users reach a member it is `owed`
    to (SPEC §27.10.1) whose homes have not all advertised `owed-held` (`holding`, §20.5)?
    Such a home, of a release before the hold of §27.11.2, refuses the envelopes older than
    the index it is given, and the outbox drops them as final; the send starts a new session
    instead, so that home holds them under one it has no key of and asks for it (§27.11.3)."""
    return any(user in owed and user not in holding for user in receiving)
