"""Key forwarding `/hearthmesh/key-forward/0` between a user's own devices (SPEC §27.12).

A device that holds envelopes it cannot open (a device linked after they were sent, or one a
sender's share never reached) asks its user's other devices for the room keys of their
sessions: one REQUEST `[1, [[room, session id], ...]]` per stream, answered by `[2, bundle,
[[olm kind, ciphertext], ...]]` (the forwarding device's key bundle, then one Olm message per
key it holds) or an ERROR `[3, code, message]`. Each Olm plaintext is a `ForwardedKey`: the
session exported at the first index the forwarder holds, with the session's sender and the
recipient named, which the recipient checks against the channel. Owns no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..canonical import decode_canonical, encode_canonical
from ..delivery import ProtocolErrorFrame
from ..envelope import RoomId
from ..errors import KeyMismatch, MalformedMessage, UnsupportedVersion
from ..identity import KEY_BYTES, DeviceId
from .keys import KeyBundle, decode_key_bundle, encode_key_bundle
from .room_key import MAX_SESSION_KEY_BYTES, OlmKind

__all__ = [
    "KEY_FORWARD_PROTOCOL",
    "MAX_FORWARDED_KEYS",
    "MAX_FORWARD_FRAME_BYTES",
    "ForwardAnswer",
    "ForwardedKey",
    "check_forwarded_key",
    "decode_forward_answer",
    "decode_forward_request",
    "decode_forwarded_key",
    "decode_session_pairs",
    "encode_forward_answer",
    "encode_forward_request",
    "encode_forwarded_key",
]

KEY_FORWARD_PROTOCOL: Final = "/hearthmesh/key-forward/0"
MAX_FORWARDED_KEYS: Final = 64
"""Sessions one request may ask for; a device with more held asks again."""
MAX_FORWARD_FRAME_BYTES: Final = 96 * 1024
"""64 Olm messages of at most 1,024 bytes, the bundle and the CBOR heads."""
_MAX_OLM_BYTES: Final = 1024
_VERSION: Final = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardedKey:
    """The Olm plaintext of one forwarded room key (SPEC §27.12.2)."""

    room: RoomId
    session_id: bytes
    exported_key: bytes
    """vodozemac's exported session key at `first_index` (its bytes, not base64)."""
    first_index: int
    sender_device: DeviceId
    """The device whose Megolm session this is (the owner the forwarder recorded, §27.7)."""
    recipient_device: DeviceId


def encode_forwarded_key(key: ForwardedKey) -> bytes:
    """CBOR [0, room, session id, exported key, first index, sender device, recipient
    device]."""
    return encode_canonical(
        [
            _VERSION,
            key.room,
            key.session_id,
            key.exported_key,
            key.first_index,
            key.sender_device,
            key.recipient_device,
        ]
    )


def decode_forwarded_key(data: bytes) -> ForwardedKey:
    """Parse a forwarded key. Raises MalformedMessage or UnsupportedVersion."""
    match decode_canonical(data, max_bytes=_MAX_OLM_BYTES):
        case [
            int() as version,
            bytes() as room,
            bytes() as session_id,
            bytes() as exported,
            int() as first_index,
            bytes() as sender_device,
            bytes() as recipient,
        ]:
            if version != _VERSION:
                raise UnsupportedVersion(f"forwarded key version {version}")
            ids = (room, session_id, sender_device, recipient)
            if any(len(i) != KEY_BYTES for i in ids) or first_index < 0:
                raise MalformedMessage("forwarded key: ids are 32 bytes, index >= 0")
            if not 0 < len(exported) <= MAX_SESSION_KEY_BYTES:
                raise MalformedMessage(f"exported key is 1..{MAX_SESSION_KEY_BYTES} bytes")
            return ForwardedKey(
                room=RoomId(room),
                session_id=session_id,
                exported_key=exported,
                first_index=first_index,
                sender_device=DeviceId(sender_device),
                recipient_device=DeviceId(recipient),
            )
    raise MalformedMessage("a forwarded key is [0, room, session, key, index, device, to]")


def check_forwarded_key(
    key: ForwardedKey, *, recipient: DeviceId, owner: DeviceId | None = None
) -> None:
    """Raises KeyMismatch unless the key was forwarded to `recipient` (SPEC §27.12.2) and,
    when `owner` is given, is a session of that device (a key request's answer, §27.13.2)."""
    if key.recipient_device != recipient:
        raise KeyMismatch("a forwarded key for another device")
    if owner is not None and key.sender_device != owner:
        raise KeyMismatch("a requested key of a session the answering device does not own")


def encode_forward_request(sessions: list[tuple[RoomId, bytes]]) -> bytes:
    """[1, [[room, session id], ...]]."""
    return encode_canonical([1, [[room, session] for room, session in sessions]])


def decode_forward_request(data: bytes) -> list[tuple[RoomId, bytes]]:
    """The (room, session id) pairs a REQUEST asks for.

    Raises:
        MalformedMessage: not [1, [[room, session], ...]] with 1..64 pairs of 32-byte ids.
    """
    match decode_canonical(data, max_bytes=MAX_FORWARD_FRAME_BYTES):
        case [1, list() as pairs]:
            return decode_session_pairs(pairs)
    raise MalformedMessage("a key forward request is [1, [[room, session], ...]] of 1..64")


def decode_session_pairs(pairs: list[object]) -> list[tuple[RoomId, bytes]]:
    """The (room, session id) pairs a request names (SPEC §27.12.1, §27.13.1).

    Raises:
        MalformedMessage: not 1..64 pairs [room, session id] of 32-byte ids.
    """
    if not 0 < len(pairs) <= MAX_FORWARDED_KEYS:
        raise MalformedMessage(f"a request names 1..{MAX_FORWARDED_KEYS} sessions")
    found: list[tuple[RoomId, bytes]] = []
    for pair in pairs:
        match pair:
            case [bytes() as room, bytes() as session] if (
                len(room) == KEY_BYTES and len(session) == KEY_BYTES
            ):
                found.append((RoomId(room), session))
            case _:
                raise MalformedMessage("a requested session is [room, session id]")
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAnswer:
    """The forwarding device's bundle and one Olm message per key it holds."""

    sender_bundle: KeyBundle
    messages: tuple[tuple[int, bytes], ...]


def encode_forward_answer(answer: ForwardAnswer) -> bytes:
    """[2, bundle, [[olm kind, ciphertext], ...]]."""
    return encode_canonical(
        [2, encode_key_bundle(answer.sender_bundle), [list(m) for m in answer.messages]]
    )


def decode_forward_answer(data: bytes) -> ForwardAnswer | ProtocolErrorFrame:
    """Parse an answer frame (the bundle's signature is the caller's to check).

    Raises:
        MalformedMessage: not ANSWER or ERROR (TooLarge past the bound).
    """
    match decode_canonical(data, max_bytes=MAX_FORWARD_FRAME_BYTES):
        case [2, bytes() as bundle, list() as items] if len(items) <= MAX_FORWARDED_KEYS:
            messages: list[tuple[int, bytes]] = []
            for item in items:
                match item:
                    case [int() as kind, bytes() as ciphertext] if (
                        kind in (OlmKind.PRE_KEY, OlmKind.NORMAL)
                        and 0 < len(ciphertext) <= _MAX_OLM_BYTES
                    ):
                        messages.append((kind, ciphertext))
                    case _:
                        raise MalformedMessage("a forwarded key is [olm kind, ciphertext]")
            return ForwardAnswer(sender_bundle=decode_key_bundle(bundle), messages=tuple(messages))
        case [3, int() as code, str() as message] if code >= 0 and len(message) <= 256:
            return ProtocolErrorFrame(code=code, message=message)
    raise MalformedMessage("a key forward answer is [2, bundle, [...]] or [3, code, text]")
