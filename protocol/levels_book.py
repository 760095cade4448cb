"""What each peer told of its capability levels, and whether it is worth asking (SPEC §20.7).
Owns: the levels each peer told, the peers whose hello on their current connection is awaited,
and when an unreachable peer was last tried, all bounded.

A peer of this release tells its levels in its hello/1 on every connection (SPEC §13.3), so
it is never asked: what it told on a connection before stands across a reconnection until its
new hello replaces it, one that never told any is awaited on its hello while that is on its
way, and one that could not be reached (or whose hello did not end in time) is not counted
for `RETRY_MS`, however often it connects meanwhile: its hello tells its levels when it lands.
At a 50-home group's formation the creator's connections to the homes came and went while
their hellos took 9-25 s; each new connection made a home that had just timed out due again,
and each of the creator's first ADDs waited 12-13 s on one (SPEC §20.6). A peer greeted on
hello/0 (a release before hello/1) tells nothing: what it told before is dropped and it is
asked on `/hearthmesh/caps/0` at once.

Pure: the caller passes the time (`now_ms`) in.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final, TypeVar

from .capabilities import Level

__all__ = ["MAX_PEERS_KNOWN", "RETRY_MS", "LevelsBook", "Step"]

RETRY_MS: Final = 60_000
"""How long a home that could not be reached is not asked again before a send."""

MAX_PEERS_KNOWN: Final = 4096
"""Peers whose levels (or failed try, or awaited hello) are kept; the oldest goes first (a
stranger's is one)."""

_V = TypeVar("_V")


class Step(enum.Enum):
    """What a send that depends on a peer's levels does about it."""

    KNOWN = enum.auto()
    """It told its levels (in an answer or a hello): use them."""
    AWAIT_HELLO = enum.auto()
    """It never told any and its hello on this connection is on its way: wait for that."""
    ASK = enum.auto()
    """Ask it on `/hearthmesh/caps/0` (dialling it first if it is not connected)."""
    NOT_NOW = enum.auto()
    """It could not be reached within `RETRY_MS`: not counted (SPEC §20.7.2)."""


class LevelsBook:
    """Each peer's levels and the state of asking it (SPEC §20.7.1)."""

    def __init__(self) -> None:
        self._levels: OrderedDict[str, frozenset[Level]] = OrderedDict()
        self._greeting: OrderedDict[str, None] = OrderedDict()
        """Peers connected whose hello on that connection has not ended yet."""
        self._missed: OrderedDict[str, int] = OrderedDict()
        """Peers never told that could not be reached, and when we last tried."""

    def connected(self, peer: str) -> None:
        """`peer` connected anew: its hello is awaited. What it told before stands until that
        hello replaces it, and a try that failed within `RETRY_MS` still holds a send back
        from waiting on it (the hello tells the levels when it lands)."""
        _bounded_put(self._greeting, peer, None)

    def disconnected(self, peer: str) -> None:
        """`peer`'s last connection closed: no hello of it is on its way."""
        self._greeting.pop(peer, None)

    def told(self, peer: str, levels: frozenset[Level]) -> None:
        """`peer` told `levels` (a caps answer, or its hello/1 either way): they replace what
        it told before (a peer that went back a release drops what it no longer speaks)."""
        self._missed.pop(peer, None)
        self._greeting.pop(peer, None)
        _bounded_put(self._levels, peer, levels)

    def greeted_older(self, peer: str) -> None:
        """`peer` was greeted on hello/0 (either way): a release before hello/1, which tells
        no levels. What it told before is dropped (it went back a release), and it is asked
        before the next send that depends on it, a try that failed lately notwithstanding."""
        self._levels.pop(peer, None)
        self._missed.pop(peer, None)
        self._greeting.pop(peer, None)

    def hello_failed(self, peer: str) -> None:
        """Our hello to `peer` failed (it is tried again later): it is asked meanwhile."""
        self._greeting.pop(peer, None)

    def missed(self, peer: str, now_ms: int) -> None:
        """An ask of `peer` (or the wait for its hello) got no answer: unreachable, failed
        stream, timed out. Not asked or waited on again within `RETRY_MS`, unless it is greeted
        on hello/0; what it told before stands."""
        if peer not in self._levels:
            _bounded_put(self._missed, peer, now_ms)

    def of(self, peer: str) -> frozenset[Level] | None:
        """What `peer` last told; None: it never told any (or went back to hello/0 since)."""
        return self._levels.get(peer)

    def step(self, peer: str, now_ms: int) -> Step:
        """What a send that depends on `peer`'s levels does now."""
        if peer in self._levels:
            return Step.KNOWN
        tried = self._missed.get(peer)
        if tried is not None and now_ms - tried < RETRY_MS:
            return Step.NOT_NOW  # before the hello: a hello that never ends holds no send twice
        if peer in self._greeting:
            return Step.AWAIT_HELLO
        return Step.ASK


def _bounded_put(table: OrderedDict[str, _V], key: str, value: _V) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_PEERS_KNOWN:
        table.popitem(last=False)
