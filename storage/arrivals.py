"""The arrival log: every stored event numbered in the order this store took it (`_txn` helpers).

The client feed (SPEC §15.4) resumes by these numbers, so they must survive a restart: the
append transaction gives each newly stored event the next number and writes
`arrival -> history key` beside it (one put, no extra transaction). The counter is the last key
of the log itself; trimming never removes the newest entry, so a number is never reused.

State: the arrival log in the store; an `ArrivalCounter` holds the last number for one write
transaction only, on the thread that writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import LocalProtocolError

from .api import FeedEntry, FeedPage
from .history import stored_event
from .keys import KEY_END, Table, pack_u64, unpack_u64
from .kv import KvTxn
from .records import corrupt

__all__ = [
    "MAX_FEED_PAGE",
    "ArrivalCounter",
    "arrivals_after_txn",
    "last_arrival_txn",
    "renumber_txn",
    "trim_arrivals_txn",
]

MAX_FEED_PAGE: Final = 1000
RENUMBER_SCAN: Final = 10_000
"""Newest log entries `renumber_txn` looks through for the events it moves: an event older
than that keeps its number (history shows it; a live client is not told again)."""


def last_arrival_txn(txn: KvTxn) -> int:
    """The newest arrival number, 0 before the first stored event."""
    for key, _ in txn.scan(Table.ARRIVALS, b"", KEY_END, reverse=True):
        return _number(key)
    return 0


class ArrivalCounter:
    """Numbers the events stored by one write transaction; reads the log's end only once."""

    __slots__ = ("_last",)

    def __init__(self, last: int | None = None) -> None:
        self._last = last
        """The newest number given; None: read from the log at the first `record_txn`."""

    def record_txn(self, txn: KvTxn, history_key: bytes) -> int:
        """Give the event at `history_key` the next number; returns it."""
        if self._last is None:
            self._last = last_arrival_txn(txn)
        self._last += 1
        txn.put(Table.ARRIVALS, pack_u64(self._last), history_key)
        return self._last


def arrivals_after_txn(
    txn: KvTxn, after: int, limit: int, in_hand: Mapping[bytes, Envelope] | None = None
) -> FeedPage:
    """Up to `limit` log entries numbered above `after`, in number order.

    Entries whose event was purged are passed over (they count towards `position`, not
    `entries`), so a caller pages on from `position` until it reaches `last`. An event held in
    `in_hand` (by message id, with the same bytes) is not decoded again (`stored_event`).

    Raises:
        LocalProtocolError: `limit` outside 1..MAX_FEED_PAGE, or a negative `after`.
    """
    if not 1 <= limit <= MAX_FEED_PAGE:
        raise LocalProtocolError(f"feed page limit must be 1..{MAX_FEED_PAGE}, got {limit}")
    entries: list[FeedEntry] = []
    position = after
    for examined, (key, history_key) in enumerate(
        txn.scan(Table.ARRIVALS, pack_u64(after + 1), KEY_END)
    ):
        if examined == limit:
            break
        position = _number(key)
        value = txn.get(Table.HISTORY, history_key)
        if value is not None:
            event = stored_event(txn, history_key, value, in_hand)
            entries.append(FeedEntry(number=position, event=event))
    else:
        if position > after:  # the scan ran to the log's end: its last key is the newest
            return FeedPage(entries=tuple(entries), position=position, last=position)
    return FeedPage(entries=tuple(entries), position=position, last=last_arrival_txn(txn))


def renumber_txn(txn: KvTxn, history_keys: Mapping[bytes, None]) -> int:
    """Give the events at `history_keys` the next numbers, in the order given, each in place
    of its entry among the newest `RENUMBER_SCAN`: an event that became readable (its room key
    came after it, SPEC §27.13) is told to clients as if it arrived now, and a replay tells it
    once. Returns how many moved.
    """
    counter = ArrivalCounter(last_arrival_txn(txn))  # before any delete: never reuse a number
    found: dict[bytes, bytes] = {}
    for examined, (key, history_key) in enumerate(
        txn.scan(Table.ARRIVALS, b"", KEY_END, reverse=True)
    ):
        if examined == RENUMBER_SCAN or len(found) == len(history_keys):
            break
        if history_key in history_keys:
            found[history_key] = key
    moved = 0
    for history_key in history_keys:
        old = found.get(history_key)
        if old is None:
            continue
        txn.delete(Table.ARRIVALS, old)  # after the scan: never mutate under a cursor
        counter.record_txn(txn, history_key)
        moved += 1
    return moved


def trim_arrivals_txn(txn: KvTxn, limit: int) -> int:
    """Drop the oldest entries whose event is gone (purged), up to `limit`; never the newest.

    Returns how many were dropped.
    """
    newest = last_arrival_txn(txn)
    doomed: list[bytes] = []
    for key, history_key in txn.scan(Table.ARRIVALS, b"", pack_u64(newest)):
        if len(doomed) == limit or txn.get(Table.HISTORY, history_key) is not None:
            break
        doomed.append(key)
    for key in doomed:  # after the scan: never mutate under a cursor
        txn.delete(Table.ARRIVALS, key)
    return len(doomed)


def _number(key: bytes) -> int:
    if len(key) != 8:
        raise corrupt(Table.ARRIVALS, key, "not an arrival number")
    return unpack_u64(key)
