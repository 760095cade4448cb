"""Envelopes addressed to some members' homes only (SPEC §8.5, §16.2.3, §27.5.3): a RECEIPT or
a ROOM_KEY.

Every other stored kind goes to every member's home and is numbered 1, 2, 3, ... per (sender
device, room) (SPEC §8.1). An addressed RECEIPT goes to the homes of the users whose messages
it names and to its sender's own other homes, an addressed ROOM_KEY to the homes of the one
user whose devices its shares are for and to its sender's own other homes, so a member who
never gets it must see no gap where it would stand: it carries the fixed number
`UNSEQUENCED`, goes to the app as it is stored, is never asked for by number (SPEC §26), and
never travels on a room's gossip topic, which every member follows (SPEC §14).

Both may also come in the form of the revision before (SPEC §20.7): sequenced, sent to every
member and gossiped, as any other kind. A node sends it so while a home it would reach has not
advertised `addressed-receipts` (`addressed-room-keys`), and every node takes it without
charge. Which form an envelope has is read from its number alone, so a relay or a sibling that
forwards it needs to know nothing of who sealed it. Which envelopes a sender gossips at all
(`is_gossiped`: not MEMBERSHIP, PRIVATE, an addressed one, nor a direct room's) is judged here
too. Pure rules; no state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .envelope import MAX_SEQ, Envelope, Kind
from .errors import MalformedMessage, NotAddressed
from .identity import UserId
from .rooms import is_direct_room

__all__ = [
    "ADDRESSED_KINDS",
    "NOT_GOSSIPED_KINDS",
    "UNSEQUENCED",
    "check_gossiped",
    "check_sequencing",
    "is_addressed",
    "is_gossiped",
    "is_sequenced",
]

UNSEQUENCED: Final = MAX_SEQ
"""The `seq` of an envelope with no place in its sender's sequence: the highest number an
envelope may carry (SPEC §5.1), which no sender reaches, and beyond every reorder window."""

ADDRESSED_KINDS: Final = frozenset({Kind.RECEIPT, Kind.ROOM_KEY})
"""Kinds that may be sent to some members' homes only, unsequenced and never gossiped."""

NOT_GOSSIPED_KINDS: Final = frozenset({Kind.MEMBERSHIP, Kind.PRIVATE})
"""Kinds a sender never publishes, whatever their number: MEMBERSHIP goes by the guaranteed
path only (SPEC §12.2: a validator charges it on gossip like a forgery), PRIVATE only to its
sender's own homes."""


def is_sequenced(envelope: Envelope) -> bool:
    """Does `envelope` take a place in its sender's sequence (SPEC §8.5)? All but an
    addressed RECEIPT or ROOM_KEY do, those in the broadcast form before their revision too
    (SPEC §20.7)."""
    return envelope.seq != UNSEQUENCED


def is_addressed(envelope: Envelope) -> bool:
    """Is `envelope` an addressed RECEIPT or ROOM_KEY, judged by where it may go (SPEC §16.2.3,
    §27.5.3)?"""
    return envelope.kind in ADDRESSED_KINDS and not is_sequenced(envelope)


def check_sequencing(envelope: Envelope) -> None:
    """Only an addressed kind may carry `UNSEQUENCED` (SPEC §8.5); a RECEIPT or ROOM_KEY may
    also be sequenced, the broadcast form before its revision (SPEC §20.7).

    Raises:
        MalformedMessage: another kind carries `UNSEQUENCED`.
    """
    if envelope.seq == UNSEQUENCED and envelope.kind not in ADDRESSED_KINDS:
        raise MalformedMessage(
            f"a {envelope.kind.name} with seq {envelope.seq}: only a RECEIPT or ROOM_KEY is"
            " unsequenced"
        )


def check_gossiped(envelope: Envelope) -> None:
    """Gossip reaches every member: an addressed envelope is never published (SPEC §16.2.3,
    §27.5.3); one in the broadcast form may be (SPEC §20.7).

    Raises:
        NotAddressed: an addressed envelope on a room's topic.
    """
    if is_addressed(envelope):
        raise NotAddressed(f"an unsequenced {envelope.kind.name} never travels on gossip")


def is_gossiped(envelope: Envelope, members: Iterable[UserId]) -> bool:
    """Does the sender publish `envelope` on its room's topic as well as delivering it (SPEC
    §14)? Not a MEMBERSHIP or PRIVATE, not an addressed (unsequenced) envelope, and nothing of
    a direct room of these `members`: its one other home node is reached by the deliver stream
    at once, so gossip would only double the work on both ends (SPEC §14.1)."""
    return (
        envelope.kind not in NOT_GOSSIPED_KINDS
        and is_sequenced(envelope)
        and not is_direct_room(envelope.room, members)
    )
