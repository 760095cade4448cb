"""Room-key requests `/hearthmesh/key-request/0` to a session's sender (SPEC §27.13), sans-I/O.

A member's home that holds envelopes whose room key never reached it asks the home of the
device that sent them: one REQUEST `[1, user, [[room, session id], ...]]` per stream, naming the
asking home's user (whose record must list the asking home) and 1 to 64 sessions. The answer is
the key-forward ANSWER or ERROR frame (§27.12): the sender device's bundle and one Olm message
per asked session it owns, each a `ForwardedKey`. The asker's retry bounds are
`next_key_request_ms`, `KEY_REQUEST_ATTEMPTS` and one `KeyRequestSchedule` per held session;
`next_round_ms` is when the asker next has something to do.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    "KEY_REQUEST_NOT_LISTED_DEFERRALS",
    "KEY_REQUEST_PROTOCOL",
    "MAX_KEY_REQUEST_BYTES",
    "KeyRequest",
    "KeyRequestSchedule",
    "decode_key_request",
    "encode_key_request",
    "last_counted_request_ms",
    "next_key_request_ms",
    "next_round_ms",
]

KEY_REQUEST_PROTOCOL: Final = "/hearthmesh/key-request/0"
MAX_KEY_REQUEST_BYTES: Final = 8 * 1024
"""64 pairs of two 32-byte ids with their CBOR heads, and the user id: under 5 KiB."""
KEY_REQUEST_ATTEMPTS: Final = 5
"""Counted requests for one session that ended before its held envelopes count as
undecryptable (§27.13.3)."""
KEY_REQUEST_MAX_BACKOFF_MS: Final = 10 * 60_000
"""The longest wait between two requests for one session: it is asked for as long as held."""
KEY_REQUEST_NOT_LISTED_DEFERRALS: Final = 4
"""NOT_LISTED refusals of one session that are not counted as requests (§27.13.3): our user's
record listing this home had not reached the sender yet. Each waits the interval doubling per
such refusal (2, 4, 8, 16 s by default: ~30 s for the record to spread), and past these they
count: a sender that says NOT_LISTED forever costs 4 requests more than one that refuses."""
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
    asker (once for the first ask, afresh for each later wait), so homes that saw the session
    held together do not ask its sender together.

    The first ask (`attempts` 0) is `first_ms` to twice that away; each later wait, counted
    from the end of the request before (`KeyRequestSchedule.ended`), is the interval doubling
    per request, at most 10 minutes, shortened by up to half by `spread`.

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


def last_counted_request_ms(first_ms: int, ask_bound_ms: int, *, not_listed: int = 0) -> int:
    """The latest the KEY_REQUEST_ATTEMPTS-th counted request goes after a session is seen
    held, when each request lasts at most `ask_bound_ms` (§27.13.3): the first ask at most 2 I,
    each request's end then at most `ask_bound_ms` after its start, each wait from that end at
    most its backoff (I, 2I, 4I, 8I): 17 I + 4 T, 74 s by default (I 2 s, T 10 s). Each of
    `not_listed` NOT_LISTED refusals before it (at most KEY_REQUEST_NOT_LISTED_DEFERRALS) adds
    its request and its wait (I, 2I, ...): with all 4, 32 I + 8 T, 144 s by default."""
    waits = sum(first_ms << n for n in range(KEY_REQUEST_ATTEMPTS - 1))
    deferrals = min(not_listed, KEY_REQUEST_NOT_LISTED_DEFERRALS)
    waits += sum(first_ms << n for n in range(deferrals))
    return 2 * first_ms + waits + (KEY_REQUEST_ATTEMPTS - 1 + deferrals) * ask_bound_ms


@dataclass(slots=True)
class KeyRequestSchedule:
    """One held session's requests to its sender (§27.13.3): how many ended counted (and how
    many were refused NOT_LISTED, uncounted), and when the next is due; `next_ms` is None while
    one is out. Each wait counts from the end of the request before, with a spread drawn for it:
    counted from its start, every wait shorter than the ask bound (10 s) ended inside a
    request that timed out, and every home that had asked a silent sender together asked it
    again together, in step with the timeout (#18). A request is counted when it ends, not when
    it goes: counted as it went and taken back at a NOT_LISTED refusal, a session whose fifth
    counted request was so refused showed undecryptable while it was out, then not (the node's
    count went 1 -> 0), then again at the next request."""

    interval_ms: int
    next_ms: int | None
    count: int = 0
    """Requests that ended counted: answered without this session, refused other than
    NOT_LISTED (or NOT_LISTED past KEY_REQUEST_NOT_LISTED_DEFERRALS), failed or timed out."""
    not_listed: int = 0
    """NOT_LISTED refusals not counted in `count` (at most KEY_REQUEST_NOT_LISTED_DEFERRALS)."""

    @classmethod
    def seen(cls, now_ms: int, *, interval_ms: int, spread: float) -> KeyRequestSchedule:
        """A session first seen held at `now_ms`: asked first one to two intervals later (its
        ROOM_KEY may be a moment behind)."""
        return cls(interval_ms, next_key_request_ms(0, now_ms, first_ms=interval_ms, spread=spread))

    def due(self, now_ms: int) -> bool:
        return self.next_ms is not None and now_ms >= self.next_ms

    def asked(self) -> None:
        """A request for it went out: not due again until it ends."""
        self.next_ms = None

    def ended(self, now_ms: int, *, spread: float) -> None:
        """The request ended at `now_ms` (answered without this session, refused, failed or
        timed out): it counts, and the next waits its backoff from now, shortened by a fresh
        `spread`."""
        self.count += 1
        self.next_ms = next_key_request_ms(
            self.count, now_ms, first_ms=self.interval_ms, spread=spread
        )

    def refused_not_listed(self, now_ms: int, *, spread: float) -> None:
        """The sender refused NOT_LISTED at `now_ms`: it does not hold our user's record
        listing this home yet. The request is not counted, and the next waits the interval
        doubling per such refusal, for the record to reach the sender; past
        KEY_REQUEST_NOT_LISTED_DEFERRALS such refusals it counts, as `ended`."""
        if self.not_listed >= KEY_REQUEST_NOT_LISTED_DEFERRALS:
            self.ended(now_ms, spread=spread)
            return
        self.not_listed += 1
        self.next_ms = next_key_request_ms(
            self.not_listed, now_ms, first_ms=self.interval_ms, spread=spread
        )

    @property
    def undecryptable(self) -> bool:
        """KEY_REQUEST_ATTEMPTS requests ended counted and it is still held: its envelopes
        count as such, from then on (the count never goes back while it is held)."""
        return self.count >= KEY_REQUEST_ATTEMPTS


def next_round_ms(schedules: Iterable[KeyRequestSchedule], now_ms: int) -> int | None:
    """When the asker's next round is due (§27.13.3): the earliest ask still to come, after
    `now_ms`; None when none is. A session due at or before `now_ms` after a round is waiting
    for a request to end (its sender's, or any while MAX senders are being asked), and one
    being asked has no time until its request ends: that end wakes the asker, so it sleeps
    through its interval instead of reading the store to find nothing due."""
    return min(
        (s.next_ms for s in schedules if s.next_ms is not None and s.next_ms > now_ms),
        default=None,
    )
