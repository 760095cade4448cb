"""Capability levels a node advertises on `/hearthmesh/caps/0` (SPEC §20.5), sans-I/O.

A level names a set of SPEC sections a node implements, so a conformance run tests a node by
what it claims (`hearthmesh conformance run`). The asker sends `[0]`; the node answers
`[1, [level, ...]]`, the names sorted and each once. A name this implementation does not know
is skipped, not refused: a newer node may add levels. A node that does not serve the protocol
(an older version) is taken to be at `core`.

A level also names a wire form newer than the one its sections first had (SPEC §20.7): a node
sends that form only to homes that all advertised it, and the older form to any other.

State: none.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .errors import MalformedMessage

__all__ = [
    "CAPS_PROTOCOL",
    "MAX_CAPS_BYTES",
    "Level",
    "decode_caps_answer",
    "decode_caps_request",
    "encode_caps_answer",
    "encode_caps_request",
    "level_names",
    "levels_named",
    "speak",
]

CAPS_PROTOCOL: Final = "/hearthmesh/caps/0"
MAX_CAPS_BYTES: Final = 1024
_MAX_LEVELS: Final = 32
_MAX_NAME: Final = 32
_REQUEST: Final = 0
_ANSWER: Final = 1


class Level(StrEnum):
    """The capability levels (SPEC §20.5)."""

    CORE = "core"
    """Identity, envelope, per-sender order, DELIVER/ACK, hello (§3-11, §13.3), gap fetch (§26)."""
    IM = "im"
    """Groups and membership (§12), receipts (§16), media (§25), what clients are shown (§15)."""
    MULTI_DEVICE = "multi-device"
    """Linked devices (§22) and sync between the homes of one user (§23)."""
    RELAY = "relay"
    """Holds envelopes for others' homes and forwards them (§11.5.2)."""
    E2EE = "e2ee"
    """Key bundles and claims, Olm and Megolm (§27)."""
    ADD_SEVERAL = "add-several"
    """Revision (§20.7): an ADD may name up to 64 users in its seventh field (§12.1.1)."""
    ADDRESSED_RECEIPTS = "addressed-receipts"
    """Revision (§20.7): a RECEIPT may be addressed and unsequenced (§8.5, §16.2.3)."""
    ADDRESSED_ROOM_KEYS = "addressed-room-keys"
    """Revision (§20.7): a ROOM_KEY may be addressed to one user's homes, unsequenced (§27.5.3)."""
    OWED_HELD = "owed-held"
    """A home that holds an envelope older than the session it holds, never refuses it
    (§27.11.2): a sender may give it a session it owes its user without a rotation (§27.11.3)."""


def speak(homes: Iterable[frozenset[Level]], level: Level) -> bool:
    """May a revised form reach these homes (SPEC §20.7)? Only if every one advertised `level`.

    Args:
        homes: what each home the form would reach answered; a home that serves no capability
            protocol answered nothing. Homes that were never reached are not among them.
    """
    return all(level in levels for levels in homes)


def encode_caps_request() -> bytes:
    """`[0]`."""
    return encode_canonical([_REQUEST])


def decode_caps_request(data: bytes) -> None:
    """Check a request. Raises MalformedMessage (TooLarge past the bound)."""
    if decode_canonical(data, max_bytes=MAX_CAPS_BYTES) != [_REQUEST]:
        raise MalformedMessage("a capability request is [0]")


def encode_caps_answer(levels: frozenset[Level]) -> bytes:
    """`[1, [name, ...]]`, sorted."""
    return encode_canonical([_ANSWER, level_names(levels)])


def decode_caps_answer(data: bytes) -> frozenset[Level]:
    """The levels an answer names (unknown names skipped). Raises MalformedMessage (TooLarge
    past the bound) for another shape, a name twice or out of order, or too many."""
    match decode_canonical(data, max_bytes=MAX_CAPS_BYTES):
        case [1, list() as names]:
            return levels_named(names)
    raise MalformedMessage("a capability answer is [1, [sorted distinct names]]")


def level_names(levels: frozenset[Level]) -> list[CborValue]:
    """The names of `levels`, sorted: how an answer (and a hello, SPEC §13.3) lists them."""
    return [str(level) for level in sorted(levels)]


def levels_named(names: list[CborValue]) -> frozenset[Level]:
    """The levels `names` lists, unknown names skipped. Raises MalformedMessage for a name
    twice, out of order, not text of 1-32 characters, or more than 32 names."""
    if not (
        len(names) <= _MAX_LEVELS
        and all(isinstance(n, str) and 0 < len(n) <= _MAX_NAME for n in names)
        and names == sorted({str(n) for n in names})
    ):
        raise MalformedMessage("capability levels are at most 32 sorted distinct names")
    known = {str(level) for level in Level}
    return frozenset(Level(n) for n in names if isinstance(n, str) and n in known)
