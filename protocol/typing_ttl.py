"""Typing indicators lapse (SPEC §17): who is typing where, and when each indicator ends.

A typist's app that dies never sends `active: false`; the home node ends the indicator for its
clients `ttl_ms` after the latest `active: true`, and every new `active: true` starts it again.
Sans-I/O: the caller passes `now_ms`, asks `timer_ms()` when to call `handle_timer` next.

State: the instance's: the deadline of each active typing indicator; its owner calls it from
one thread.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.identity import UserId

__all__ = ["TYPING_TTL_MS", "TypingTimers"]

TYPING_TTL_MS: Final = 6_000

Typist = tuple[RoomId, UserId]


class TypingTimers:
    """The deadline of each active typing indicator."""

    def __init__(self, ttl_ms: int = TYPING_TTL_MS) -> None:
        self._ttl_ms = ttl_ms
        self._deadlines: dict[Typist, int] = {}

    def update(self, room: RoomId, user: UserId, active: bool, now_ms: int) -> None:
        """`user` started (or went on) typing in `room`, or stopped."""
        if active:
            self._deadlines[room, user] = now_ms + self._ttl_ms
        else:
            self._deadlines.pop((room, user), None)

    def timer_ms(self) -> int | None:
        """When the next indicator lapses (absolute ms), None if nobody is typing."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now_ms: int) -> list[Typist]:
        """The indicators that lapsed by `now_ms`; they are forgotten."""
        lapsed = [typist for typist, deadline in self._deadlines.items() if deadline <= now_ms]
        for typist in lapsed:
            del self._deadlines[typist]
        return lapsed
