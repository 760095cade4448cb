"""When a device asks each of its sibling homes for the keys of what it holds (SPEC §27.12.1).

A sibling that forwarded nothing new holds none of the asked sessions, and will not until it
learns them itself, so asking it every interval for as long as something stays held (a session
no device of ours ever got) is a request every 2 s, forever. Each sibling is asked again after
the interval while it forwards keys, and with the key requests' backoff while it forwards none
(I, 2I, 4I, ... up to `KEY_REQUEST_MAX_BACKOFF_MS`, each shortened by a spread drawn for it).
A hold written since (a session it may hold) makes every sibling due again at once, and a
sibling first seen (a home linked or reconnected since) is due at once.

Pure: the caller passes the time (`now_ms`) and the spread in. State: each sibling's fruitless
asks and next due time, for our user's own homes only (`keep`).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from .key_request import next_key_request_ms

__all__ = ["SiblingAsks"]


@dataclass(slots=True)
class _Sibling:
    fruitless: int = 0
    """Asks in a row that took no new key."""
    next_ms: int = 0


class SiblingAsks:
    """Each sibling home's next ask (the module docstring)."""

    def __init__(self, interval_ms: int) -> None:
        self._interval_ms = interval_ms
        self._siblings: dict[str, _Sibling] = {}

    def due(self, connected: Iterable[str], now_ms: int) -> list[str]:
        """The connected siblings to ask now, in the order given."""
        return [peer for peer in connected if self._of(peer).next_ms <= now_ms]

    def asked(self, peer: str, now_ms: int, *, taken: int, spread: float) -> None:
        """An ask of `peer` ended at `now_ms` having taken `taken` new keys (0 when it failed):
        next the interval on, or the backoff of its fruitless asks."""
        sibling = self._of(peer)
        if taken:
            sibling.fruitless = 0
            sibling.next_ms = now_ms + self._interval_ms
            return
        sibling.fruitless += 1
        sibling.next_ms = next_key_request_ms(
            sibling.fruitless, now_ms, first_ms=self._interval_ms, spread=spread
        )

    def held_more(self) -> None:
        """A hold was written since the last round: every sibling is due again at once."""
        for sibling in self._siblings.values():
            sibling.fruitless = 0
            sibling.next_ms = 0

    def next_ms(self, connected: Iterable[str], now_ms: int) -> int | None:
        """The earliest ask still to come of a connected sibling, after `now_ms`; None when
        none is."""
        return min(
            (s.next_ms for p in connected if (s := self._of(p)).next_ms > now_ms), default=None
        )

    def keep(self, siblings: Set[str]) -> None:
        """Forget the homes that are no longer our user's: the state stays bounded by them."""
        for peer in [p for p in self._siblings if p not in siblings]:
            del self._siblings[peer]

    def _of(self, peer: str) -> _Sibling:
        return self._siblings.setdefault(peer, _Sibling())
