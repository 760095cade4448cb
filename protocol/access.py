"""Who may read what a room holds here: the one access rule of gap fetching (SPEC §26.3) and
media serving (SPEC §25.3.1).

A peer may read if it is one of our own user's other homes, or a home, by the newest home
record we hold (SPEC §13), of one of the users entitled to read: the members of the room (a
gap fetch), or the members of the rooms where our user sent the blob (media). Which users those
are is the caller's to say; the rule is the same. Pure: no state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from .identity import UserId

__all__ = ["may_read"]


def may_read(
    peer: str,
    readers: Iterable[UserId],
    *,
    own_home: bool,
    homes_of: Callable[[UserId], Collection[str]],
) -> bool:
    """Is `peer` our own other home, or a home of one of `readers`?

    Args:
        peer: the asking peer id.
        readers: the users entitled to what is asked for.
        own_home: `peer` is one of our own user's other homes.
        homes_of: the peer ids of a user's homes, by the newest record held.
    """
    return own_home or any(peer in homes_of(user) for user in readers)
