"""The client feed (SPEC §15.4.3): the store's arrival log, told to clients as numbered events.

Every event the store keeps has an arrival number, written in its append transaction
(storage/arrivals.py), so the feed survives a restart: a cursor is `<epoch>.<number>`, where
the epoch is random per store and kept in its settings (a new or wiped store gets a new one,
and old cursors then answer `resync`). One tail task renders new log entries in number order
and publishes them, so live frames never overtake each other; a client that reconnects with a
cursor gets the entries after it rendered by the same code from the store, then the live
stream, with no gap and no repeat. A client's own send publishes at once from the sending task
(`catch_up`), saving the switch to the tail task on the hot path; one drain runs at a time, so
the order holds either way.

The live tail renders each new event from the envelope already in hand (`hold`: the one a
client just sent, or the one the node reported arriving): the store's log still gives the
numbers and order (they are assigned in the append transaction), but a held envelope is not
decoded again from its stored bytes. A commit that hands back the entries it numbered (a
client's own send, `catch_up(told)`; what arrived, or a receipt of ours, `tell`) is not read
from the log at all when those numbers are the next ones; a receipt of ours does not wake the
tail, it rides its next pass. A replay for a client that is catching up
decodes from the store.

State owned here: the epoch, the published position, the envelopes in hand and the entries
told and not yet published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import HearthError, store_failed
from hearthmesh.storage.api import FeedEntry
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["EPOCH_SETTING", "Feed", "dumps"]

log = logging.getLogger(__name__)

EPOCH_SETTING: Final = "api.feed_epoch"
_PAGE: Final = 256
_POLL_S: Final = 2.0
"""Backstop: an event stored without a node event (held back, synced) still goes out."""
_IN_HAND_BYTES: Final = 4 * 1024 * 1024
"""Wire bytes of envelopes held for the tail at most; the oldest go first (and are then
decoded from the store, as a replay does)."""

Render = Callable[[FeedEntry, bool], Awaitable[list[dict[str, Any]]]]
"""(entry, live) -> client frames; `live` applies the entry's side effects first."""


_NUMBER: Final = operator.attrgetter("number")

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""One encoder for every frame: `json.dumps` with arguments builds a new one each call (~1 µs
of a frame's ~4)."""


def dumps(frame: dict[str, Any]) -> str:
    """A frame's JSON text as sent to clients."""
    return _ENCODER.encode(frame)


class Feed:
    """Tails the arrival log for live clients and replays it for reconnecting ones."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        render: Render,
        publish: Callable[[str], None],
        replay_limit: int,
    ) -> None:
        self._store = store
        self._render = render
        self._publish = publish
        self._replay_limit = replay_limit
        self._wake = asyncio.Event()
        self._draining = asyncio.Lock()
        self._epoch = ""
        self.position = 0
        """The newest arrival number whose frames were published."""
        self._in_hand: OrderedDict[bytes, Envelope] = OrderedDict()
        """Envelopes stored (or about to be) and not yet published, by message id (`hold`)."""
        self._in_hand_bytes = 0
        self._aging: list[bytes] = []
        """Held when the log last grew: let go once it grows again without them."""
        self._aging_at = -1
        """The log's newest number when `_aging` was taken."""
        self._told: dict[bytes, FeedEntry] = {}
        """Entries commits told (`tell`) and the tail has not taken yet, by message id."""
        self._stale = True
        """Woken by more than told entries (`wake`, the poll): the tail reads the log."""

    async def start(self) -> None:
        """Load (or create) the store's epoch; the tail starts at the newest entry."""
        store = self._store
        epoch = await store.run(store.store.get_setting, EPOCH_SETTING)
        if epoch is None:
            epoch = secrets.token_hex(4).encode()
            await store.run(store.store.set_setting, EPOCH_SETTING, epoch)
        self._epoch = epoch.decode("ascii", errors="replace")
        self.position = await store.read(store.store.last_arrival)

    def cursor_at(self, number: int) -> str:
        """The cursor of the event numbered `number`."""
        return f"{self._epoch}.{number}"

    def wake(self) -> None:
        """Something was stored: publish it soon."""
        self._stale = True
        self._wake.set()

    def tell(self, entries: Sequence[FeedEntry] | None, *, wake: bool = True) -> None:
        """A commit made these log entries (None: it also moved or removed some): publish them
        soon, from these when they are the next numbers.

        `wake=False`: no client waits on them (our own receipts, each ack's echo): they go out
        with the tail's next pass (the next commit told or woken, a send, the poll), as an
        event stored with no word always did, instead of a pass of their own.
        """
        if entries is None:
            self.wake()
            return
        told = self._told
        for entry in entries:
            if entry.number > self.position:  # else published already (`catch_up`)
                told[entry.event.envelope.message_id] = entry
        if told and wake:
            self._wake.set()

    def arrived(self, envelope: Envelope) -> None:
        """The node reported `envelope` (stored): publish it soon, from this copy, unless the
        entry of its commit was told already."""
        if envelope.message_id not in self._told:
            self.hold(envelope)
            self.wake()

    def hold(self, envelope: Envelope) -> None:
        """`envelope` was just stored, or is about to be: the tail renders it from this copy,
        not from the store."""
        if envelope.message_id in self._in_hand:
            return
        self._in_hand[envelope.message_id] = envelope
        self._in_hand_bytes += len(envelope.wire)
        while self._in_hand_bytes > _IN_HAND_BYTES:
            _, oldest = self._in_hand.popitem(last=False)
            self._in_hand_bytes -= len(oldest.wire)

    @property
    def held_count(self) -> int:
        """Envelopes in hand, not yet published."""
        return len(self._in_hand)

    def _release(self, message_id: bytes) -> None:
        envelope = self._in_hand.pop(message_id, None)
        if envelope is not None:
            self._in_hand_bytes -= len(envelope.wire)

    async def run(self) -> None:
        """Publish new log entries in number order until cancelled."""
        while True:
            async with self._draining:
                await self._tail()
            try:
                async with asyncio.timeout(_POLL_S):
                    await self._wake.wait()
            except TimeoutError:
                self._stale = True

    async def catch_up(self, told: Sequence[FeedEntry] = ()) -> None:
        """Publish what is new now, in the calling task; if a drain is under way, it will.

        `told`: entries the caller's commit just made, in number order (its own send). When
        they are the next numbers and follow each other, they are published from these, with
        no read of the log: every number up to them is published and none lies between them, so
        the order and exactly-once hold. Anything after them is the tail's, as it always was;
        otherwise (a number before them not yet published) the log is read. Entries `tell` gave
        and the tail has not taken join them (an arrival committed just before the send); the
        tail does the same with those, unless something else woke it too.
        """
        if self._draining.locked():
            if told:
                self.tell(told)
            else:
                self.wake()
            return
        async with self._draining:
            entries = self._take_told(told)
            if told and _follow(entries, self.position):
                await self._publish_entries(entries)
            else:
                await self._read_log(entries)

    async def _tail(self) -> None:
        """Publish what commits told, with no read of the log when only they woke the tail
        and they are the next numbers; else read the log (the told envelopes in hand)."""
        self._wake.clear()
        told = self._take_told()
        if not self._stale and (not told or _follow(told, self.position)):
            await self._publish_entries(told)
        else:
            await self._read_log(told)

    def _take_told(self, more: Sequence[FeedEntry] = ()) -> Sequence[FeedEntry]:
        """The entries told and not yet published, with `more` (a send's own, in number order,
        none of them told), in number order."""
        told = self._told
        if not told:
            return more  # the usual send: nothing else was told meanwhile
        entries = [*told.values(), *more]  # (one published since it was told: the log is read)
        told.clear()
        if len(entries) > 1:
            entries.sort(key=_NUMBER)
        return entries

    async def _read_log(self, told: Sequence[FeedEntry]) -> None:
        """Publish from the log what it holds past the position, told envelopes in hand."""
        for entry in told:
            if entry.number > self.position:  # else published already: nothing to hold for
                self.hold(entry.event.envelope)
        await self._drain()

    async def _drain(self) -> None:
        store = self._store
        while True:
            self._wake.clear()  # before reading: a wake during the read is not lost
            self._stale = False
            page = await store.read_inline(
                store.store.arrivals_after, self.position, limit=_PAGE, in_hand=self._in_hand
            )
            await self._publish_entries(page.entries)
            self.position = max(self.position, page.position)
            if page.position >= page.last:
                # Caught up. What is still held was published before it was held (the tail
                # read it first), or is not committed yet. An envelope held before the log
                # last grew and still not in it was the former (or never stored): let go.
                if page.last != self._aging_at:
                    for message_id in self._aging:
                        self._release(message_id)
                    self._aging, self._aging_at = list(self._in_hand), page.last
                return

    async def _publish_entries(self, entries: Sequence[FeedEntry]) -> None:
        """Publish these log entries live, in order (the caller holds `_draining`)."""
        for entry in entries:
            self._release(entry.event.envelope.message_id)
            for text in await self._frames(entry, live=True):
                self._publish(text)
            self.position = entry.number

    async def replay(self, cursor: str, upto: int) -> list[str] | None:
        """Frames of every entry after `cursor` up to `upto`; None if that cannot be exact.

        None means: another epoch (a new store), not a cursor at all, one ahead of `upto`, or
        more than the replay limit behind.
        """
        epoch, _, digits = cursor.partition(".")
        if epoch != self._epoch or not digits.isdigit() or len(digits) > 20:
            return None
        position = int(digits)
        if position > upto or upto - position > self._replay_limit:
            return None
        out: list[str] = []
        store = self._store
        while position < upto:
            page = await store.read(
                store.store.arrivals_after, position, limit=min(_PAGE, upto - position)
            )
            for entry in page.entries:
                if entry.number > upto:
                    return out
                out += await self._frames(entry, live=False)
            if page.position == position:
                break  # nothing further in the log
            position = page.position
        return out

    async def _frames(self, entry: FeedEntry, *, live: bool) -> list[str]:
        try:
            frames = await self._render(entry, live)
        except HearthError as exc:  # one bad event must not stop the feed
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.warning("event #%d not shown to clients: %s", entry.number, exc)
            return []
        cursor = self.cursor_at(entry.number)
        return [dumps({**frame, "cursor": cursor}) for frame in frames]


def _follow(entries: Sequence[FeedEntry], position: int) -> bool:
    """Are `entries` numbered position + 1, position + 2, ... in turn (and some at all)?"""
    return bool(entries) and all(
        entry.number == position + i for i, entry in enumerate(entries, start=1)
    )
