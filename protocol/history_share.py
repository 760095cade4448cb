"""History for new members `/hearthmesh/history/0` (SPEC §30.6), sans-I/O. Owns no state.

A group whose HISTORY setting is `shared` (§30.1) gives a new member the last N messages
before their ADD. The joiner's home asks the admin's home that admitted it: one REQUEST
`[1, room, user]` per stream, `user` the asking home's user. The admin's home queues the chosen
envelopes, as stored (ciphertext), to that user's homes on the guaranteed path (§11) and
answers with the key-forward ANSWER or ERROR frame (§27.12.1): its device's bundle and one Olm
message per Megolm session of those envelopes, each exported at the lowest index among them, so
the joiner reads the shared messages and nothing before them. `choose_history` is the one rule
of what is shared; `check_history_request` who may ask; `take_history_answer` what the joiner
takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import vodozemac

from .canonical import decode_canonical, encode_canonical
from .delivery import ProtocolErrorFrame
from .e2ee.forward import MAX_FORWARDED_KEYS, ForwardAnswer, decode_forward_answer
from .e2ee.keys import KeyBundle
from .e2ee.megolm import decode_encrypted_body
from .envelope import Envelope, Kind, MessageId, RoomId, load_envelope
from .errors import HistoryNotShared, MalformedMessage, RemoteProtocolError, refusal
from .identity import KEY_BYTES, UserId
from .membership import HISTORY_SHARED, RoomState

__all__ = [
    "HISTORY_PROTOCOL",
    "MAX_HISTORY_REQUEST_BYTES",
    "MAX_HISTORY_SCAN",
    "HistoryRequest",
    "SharedHistory",
    "check_history_answer",
    "check_history_request",
    "choose_history",
    "decode_history_request",
    "encode_history_request",
    "megolm_position",
    "take_history_answer",
]

HISTORY_PROTOCOL: Final = "/hearthmesh/history/0"
MAX_HISTORY_REQUEST_BYTES: Final = 128
MAX_HISTORY_SCAN: Final = 4096
"""Stored events an admin's home looks through, back from the ADD, for the messages to share:
bounds its work per request whatever the room holds."""
_REQUEST: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRequest:
    """Who asks (the user whose record lists the asking home) and for which group."""

    room: RoomId
    user: UserId


def encode_history_request(request: HistoryRequest) -> bytes:
    """[1, room, user]."""
    return encode_canonical([_REQUEST, request.room, request.user])


def decode_history_request(data: bytes) -> HistoryRequest:
    """Parse a REQUEST. Raises MalformedMessage (TooLarge past 128 bytes)."""
    match decode_canonical(data, max_bytes=MAX_HISTORY_REQUEST_BYTES):
        case [1, bytes() as room, bytes() as user] if len(room) == len(user) == KEY_BYTES:
            return HistoryRequest(room=RoomId(room), user=UserId(user))
    raise MalformedMessage("a history request is [1, room, user]")


def check_history_request(state: RoomState | None, user: UserId) -> int:
    """How many messages the group shares with `user`, a member of it now (SPEC §30.6).

    Raises:
        HistoryNotShared: not a group here, `user` not a member, or the setting is `joined`.
    """
    if state is None or state.direct or not state.is_member(user):
        raise HistoryNotShared("history goes to the group's current members only")
    if state.history != HISTORY_SHARED or state.history_limit < 1:
        raise HistoryNotShared("this group shares no history with new members")
    return state.history_limit


def megolm_position(envelope: Envelope) -> tuple[bytes, int] | None:
    """(session id, Megolm index) of a stored encrypted envelope (its `wire`: a home's view may
    show the plaintext in its place, §27.7); None if its body is not one."""
    try:
        encrypted = decode_encrypted_body(load_envelope(envelope.wire).body)
        index = vodozemac.MegolmMessage.from_bytes(encrypted.ciphertext).message_index()
    except (RemoteProtocolError, ValueError):  # vodozemac raises ValueError
        return None
    return encrypted.session_id, index


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedHistory:
    """What an admin's home gives a new member."""

    messages: tuple[MessageId, ...]
    """Oldest first (history order): queued in this order."""
    from_index: dict[bytes, int]
    """Per Megolm session, the lowest index among `messages`: its key is exported there."""


def choose_history(
    newest_first: Iterable[Envelope], *, limit: int, members: frozenset[UserId]
) -> SharedHistory:
    """The last `limit` messages (MESSAGE, encrypted, from current members: the joiner's home
    would defer anyone else's) of `newest_first`, the events before the joiner's ADD, newest
    first; stopping before a message whose session would be the 65th (one answer's keys)."""
    chosen: list[MessageId] = []
    from_index: dict[bytes, int] = {}
    for envelope in newest_first:
        if len(chosen) >= limit:
            break
        if envelope.kind is not Kind.MESSAGE or envelope.sender_user not in members:
            continue
        position = megolm_position(envelope)
        if position is None:
            continue
        session, index = position
        if session not in from_index and len(from_index) >= MAX_FORWARDED_KEYS:
            break
        from_index[session] = min(index, from_index.get(session, index))
        chosen.append(envelope.message_id)
    return SharedHistory(messages=tuple(reversed(chosen)), from_index=from_index)


def take_history_answer(data: bytes, listed: KeyBundle) -> ForwardAnswer:
    """The admin's home's answer, taken only from the device whose bundle (`listed`) the
    admin's newest record names at the peer asked (SPEC §30.6.4); an ERROR frame is the refusal
    its code names.

    Raises:
        HistoryNotShared: an answer from another device; nothing of it is taken.
        RemoteProtocolError: the code of an ERROR frame (HISTORY_NOT_SHARED,
            KEY_REQUEST_DENIED, RATE_LIMITED, ...), or a malformed or oversized answer.
    """
    answer = decode_forward_answer(data)
    if isinstance(answer, ProtocolErrorFrame):
        raise refusal(answer.code, f"history refused: {answer.message}")
    return check_history_answer(answer, listed)


def check_history_answer(answer: ForwardAnswer, listed: KeyBundle) -> ForwardAnswer:
    """`answer`, when its bundle is `listed` (see `take_history_answer`, of which this is the
    part after the decode: the node decodes through the reader that charges a frame that does
    not decode, SPEC §30.6.4).

    Raises:
        HistoryNotShared: an answer from another device; nothing of it is taken.
    """
    if answer.sender_bundle != listed:
        raise HistoryNotShared("the answer is not from the admin's listed device")
    return answer
