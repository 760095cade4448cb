"""Typing indicators lapse after their TTL unless refreshed (SPEC §17)."""

from __future__ import annotations

from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.typing_ttl import TYPING_TTL_MS, TypingTimers

ROOM = RoomId(b"\x01" * 32)
ANN = UserId(b"\x0a" * 32)
BOB = UserId(b"\x0b" * 32)


def test_an_indicator_lapses_at_its_ttl_and_each_refresh_restarts_it() -> None:
    timers = TypingTimers()
    assert TYPING_TTL_MS == 6_000
    assert timers.timer_ms() is None
    timers.update(ROOM, ANN, True, now_ms=1_000)
    timers.update(ROOM, BOB, True, now_ms=2_000)
    timers.update(ROOM, ANN, True, now_ms=4_000)  # refreshed: lapses at 10,000 now
    assert timers.timer_ms() == 8_000
    assert timers.handle_timer(7_999) == []
    assert timers.handle_timer(8_000) == [(ROOM, BOB)]
    assert timers.timer_ms() == 10_000
    assert timers.handle_timer(10_000) == [(ROOM, ANN)]
    assert timers.timer_ms() is None


def test_an_ended_indicator_does_not_lapse_again() -> None:
    timers = TypingTimers(ttl_ms=500)
    timers.update(ROOM, ANN, True, now_ms=0)
    timers.update(ROOM, ANN, False, now_ms=100)
    timers.update(ROOM, BOB, False, now_ms=100)  # never typing: nothing to forget
    assert timers.timer_ms() is None
    assert timers.handle_timer(10_000) == []
