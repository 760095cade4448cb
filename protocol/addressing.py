"""Envelopes addressed to some members' homes only (SPEC §8.5, §16.2.3): a RECEIPT.

Every other stored kind goes to every member's home and is numbered 1, 2, 3, ... per (sender
device, room) (SPEC §8.1). A RECEIPT goes to the homes of the users whose messages it names
and to its sender's own other homes, so a member who never gets it must see no gap where it
would stand: it carries the fixed number `UNSEQUENCED`, goes to the app as it is stored, is
never asked for by number (SPEC §26), and never travels on a room's gossip topic, which every
member follows (SPEC §14). Pure rules; no state.
"""

from __future__ import annotations

from typing import Final

from .envelope import MAX_SEQ, Envelope, Kind
from .errors import MalformedMessage, NotAddressed

__all__ = [
    "ADDRESSED_KINDS",
    "UNSEQUENCED",
    "check_gossiped",
    "check_sequencing",
    "is_sequenced",
]

UNSEQUENCED: Final = MAX_SEQ
"""The `seq` of an envelope with no place in its sender's sequence: the highest number an
envelope may carry (SPEC §5.1), which no sender reaches, and beyond every reorder window."""

ADDRESSED_KINDS: Final = frozenset({Kind.RECEIPT})
"""Kinds sent to some members' homes only, unsequenced and never gossiped."""


def is_sequenced(envelope: Envelope) -> bool:
    """Does `envelope` take a place in its sender's sequence (SPEC §8.5)?"""
    return envelope.kind not in ADDRESSED_KINDS


def check_sequencing(envelope: Envelope) -> None:
    """An addressed kind carries `UNSEQUENCED`, and no other kind does (SPEC §8.5).

    Raises:
        MalformedMessage: the number does not fit the kind.
    """
    if (envelope.kind in ADDRESSED_KINDS) != (envelope.seq == UNSEQUENCED):
        raise MalformedMessage(
            f"a {envelope.kind.name} with seq {envelope.seq}: a RECEIPT carries "
            f"{UNSEQUENCED} and no other kind does"
        )


def check_gossiped(envelope: Envelope) -> None:
    """Gossip reaches every member: an addressed kind is never published (SPEC §16.2.3).

    Raises:
        NotAddressed: an addressed kind on a room's topic.
    """
    if envelope.kind in ADDRESSED_KINDS:
        raise NotAddressed(f"a {envelope.kind.name} never travels on gossip")
