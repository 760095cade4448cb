"""Whom this node has a reason to serve: its users, their contacts and co-members (SPEC §11.5.3).

A relay holds envelopes whose sender or recipient it knows this way from a larger pool than a
stranger's, and the home directory keeps such users' records before anyone else's (SPEC §13.6).
Runs on the store's thread: each answer is a couple of key reads.
"""

from __future__ import annotations

from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Store

__all__ = ["knows"]


def knows(store: Store, local_users: set[UserId], user: UserId) -> bool:
    """True for one of our users, a co-member of a room of theirs, or a contact of one.

    The member table holds only the rooms our users take part in, so any room of `user` there
    is shared with one of ours.
    """
    if user in local_users or store.rooms_of(user):
        return True
    return any(store.is_contact(owner, user) for owner in local_users)
