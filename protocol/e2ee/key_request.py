"""Room-key requests `/hearthmesh/key-request/0` to a session's sender (SPEC §27.13), sans-I/O.

A member's home that holds envelopes whose room key never reached it asks the home of the
device that sent them: one REQUEST `[1, user, [[room, session id], ...]]` per stream, naming the
asking home's user (whose record must list the asking home) and 1 to 64 sessions. The answer is
the key-forward ANSWER or ERROR frame (§27.12): the sender device's bundle and one Olm message
per asked session it owns, each a `ForwardedKey`. The asker's retry bounds are
`next_key_request_ms` and `KEY_REQUEST_ATTEMPTS`. Owns no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..canonical import decode_canonical, encode_canonical
from ..envelope import RoomId
from ..errors import MalformedMessage
from ..identity import KEY_BYTES, UserId
from .forward import MAX_FORWARDED_KEYS, decode_session_pairs

__all__ = [
    "KEY_REQUEST_ATTEMPTS",
    "KEY_REQUEST_MAX_BACKOFF_MS",
    "KEY_REQUEST_PROTOCOL",
    "MAX_KEY_REQUEST_BYTES",
    "KeyRequest",
    "decode_key_request",
    "encode_key_request",
    "next_key_request_ms",
]

KEY_REQUEST_PROTOCOL: Final = "/hearthmesh/key-request/0"
MAX_KEY_REQUEST_BYTES: Final = 8 * 1024
"""64 pairs of two 32-byte ids with their CBOR heads, and the user id: under 5 KiB."""
KEY_REQUEST_ATTEMPTS: Final = 5
"""Requests for one session before its held envelopes count as undecryptable (§27.13.3)."""
KEY_REQUEST_MAX_BACKOFF_MS: Final = 10 * 60_000
"""The longest wait between two requests for one session: it is asked for as long as held."""
_REQUEST: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest:
    """Who asks (the user whose record lists the asking home) and for which sessions."""

    user: UserId
    sessions: tuple[tuple[RoomId, bytes], ...]


def encode_key_request(request: KeyRequest) -> bytes:
    """[1, user, [[room, session id], ...]]."""
    return encode_canonical(
        [_REQUEST, request.user, [[room, session] for room, session in request.sessions]]
    )


def decode_key_request(data: bytes) -> KeyRequest:
    """Parse a REQUEST.

    Raises:
        MalformedMessage: not [1, user, [[room, session], ...]] with a 32-byte user id and
            1..64 pairs of 32-byte ids (TooLarge past `MAX_KEY_REQUEST_BYTES`).
    """
    match decode_canonical(data, max_bytes=MAX_KEY_REQUEST_BYTES):
        case [1, bytes() as user, list() as pairs] if len(user) == KEY_BYTES:
            return KeyRequest(user=UserId(user), sessions=tuple(decode_session_pairs(pairs)))
    raise MalformedMessage(
        f"a key request is [1, user, [[room, session], ...]] of 1..{MAX_FORWARDED_KEYS}"
    )


def next_key_request_ms(attempts: int, now_ms: int, *, first_ms: int, spread: float) -> int:
    """When to ask for a session after `attempts` requests (§27.13.3). `first_ms` is the
    asker's interval (2 s by default); `spread`, in [0, 1), is drawn once per session by the
    asker, so homes that saw the session held together do not ask its sender together.

    The first ask (`attempts` 0) is `first_ms` to twice that away; each later wait is the
    interval doubling per request, at most 10 minutes, shortened by up to half by `spread`.
    With one `spread` per session the fifth request is never later than without it
    (I(1+s) + 15I(1-s/2) <= 16I), and from the fourth request on two homes drift apart.

    Raises:
        ValueError: `spread` not in [0, 1).
    """
    if not 0.0 <= spread < 1.0:
        raise ValueError(f"a key request spread is in [0, 1), not {spread}")
    interval = max(first_ms, 1)
    if attempts <= 0:
        return now_ms + interval + int(interval * spread)
    backoff = min(interval << min(attempts - 1, 20), KEY_REQUEST_MAX_BACKOFF_MS)
    return now_ms + backoff - int(backoff * spread / 2)
