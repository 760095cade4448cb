"""The case of level `owed-held` (SPEC §20.5, §27.11.2-27.11.3): an envelope older than the
session the node holds is held, not refused. State: none.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol.capabilities import Level
from hearthmesh.tools.hostile.megolm_sender import MegolmSender

from ..session import Session
from .case import Case
from .shared import node_bundle

__all__ = ["OLDER_THAN_THE_SESSION_HELD"]


async def _older_than_the_session_held(s: Session) -> str:
    """Our stranger seals two Megolm messages of one session (indexes 0 and 1), gives the
    node's device the session's key from index 1 (a ROOM_KEY over Olm, from its bundle's
    fallback key), and delivers the ROOM_KEY with the second message, then the first: a node
    that advertises `owed-held` stores the first, held for a key from an earlier index
    (§27.11.2); a release before it answered REJECTED `UNDECRYPTABLE`, and a sender that owed
    the session from index 0 lost it (§27.11.3)."""
    theirs = await node_bundle(s)
    if isinstance(theirs, str):
        return theirs
    sender = MegolmSender(s.kit, s.room)
    await sender.announce(s.peer_id)  # the ROOM_KEY's bundle is ours
    first = sender.encrypted("index 0")
    room_key = sender.room_key(theirs)  # from index 1
    second = sender.encrypted("index 1")
    given = await s.deliver([room_key.wire, second.wire])
    older = await s.deliver([first.wire])
    return f"KEY:{given},OLDER:{older}"


OLDER_THAN_THE_SESSION_HELD: Final = Case(
    name="older_than_the_session_held",
    section="§27.11.2, §27.11.3",
    expected="KEY:STORED,STORED,OLDER:STORED",
    run=_older_than_the_session_held,
    level=Level.OWED_HELD,
)
