"""The client feed's tail renders the envelope in hand; a replay decodes from the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.api import feed as feed_module
from hearthmesh.node.api.feed import Feed
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.storage.api import AppendRequest, FeedEntry
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

from ..storage.helpers import make_envelope


class _Rendered:
    """What the feed rendered (each entry's envelope object) and published."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.texts: list[str] = []
        self.more = asyncio.Event()
        """Set as each frame is published."""

    def publish(self, text: str) -> None:
        self.texts.append(text)
        self.more.set()

    async def render(self, entry: FeedEntry, live: bool) -> list[dict[str, Any]]:
        self.envelopes.append(entry.event.envelope)
        return [{"event": "message", "seq": entry.event.envelope.seq, "live": live}]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        yield store


async def _feed(store: AsyncStore) -> tuple[Feed, _Rendered]:
    """A started feed, and what it rendered and published."""
    rendered = _Rendered()
    feed = Feed(store, render=rendered.render, publish=rendered.publish, replay_limit=100)
    await feed.start()
    return feed, rendered


async def test_the_tail_renders_held_envelopes_and_decodes_the_rest(store: AsyncStore) -> None:
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        held, other = make_envelope(seq=1, wall_ms=1_000), make_envelope(seq=2, wall_ms=2_000)
        for envelope in (held, other):
            await store.append(AppendRequest(envelope=envelope))
        feed.hold(held)
        await feed.catch_up()
        assert rendered.envelopes[0] is held  # the copy in hand, not a decode of the store
        assert rendered.envelopes[1] == other and rendered.envelopes[1] is not other
        assert [t.count('"live":true') for t in rendered.texts] == [1, 1]
        assert feed.position == 2


async def test_envelopes_held_before_their_group_commit_are_rendered_from_the_hand(
    store: AsyncStore,
) -> None:
    """Sends committed together are all published by the first to resume: each was held as
    it was sealed, before the commit."""
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        envelopes = [make_envelope(seq=n, wall_ms=1_000 * n) for n in (1, 2, 3)]
        for envelope in envelopes:
            feed.hold(envelope)
        await feed.catch_up()  # before the commit: nothing to publish, nothing let go
        await asyncio.gather(*(store.append(AppendRequest(envelope=e)) for e in envelopes))
        await feed.catch_up()
        assert len(rendered.envelopes) == 3
        assert all(a is b for a, b in zip(rendered.envelopes, envelopes, strict=True))
        assert feed.held_count == 0


async def test_a_replay_renders_from_the_store_as_the_tail_did(store: AsyncStore) -> None:
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        start = feed.cursor_at(feed.position)
        envelopes = [make_envelope(seq=n, wall_ms=1_000 * n) for n in (1, 2, 3)]
        for envelope in envelopes:
            await store.append(AppendRequest(envelope=envelope))
            feed.hold(envelope)
        await feed.catch_up()
        live = list(rendered.texts)
        replay = await feed.replay(start, feed.position)
        assert replay == [t.replace('"live":true', '"live":false') for t in live]
        assert rendered.envelopes[3:] == envelopes  # equal, read back from the store
        assert all(a is not b for a, b in zip(rendered.envelopes[3:], envelopes, strict=True))


async def test_held_envelopes_the_tail_passed_are_let_go(store: AsyncStore) -> None:
    """An envelope held after the tail already published it is not kept for ever."""
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        late = make_envelope(seq=1, wall_ms=1_000)
        await store.append(AppendRequest(envelope=late))
        await feed.catch_up()  # published from the store: nothing held yet
        feed.hold(late)  # the node's event about it comes after
        fresh = make_envelope(seq=2, wall_ms=2_000)
        await store.append(AppendRequest(envelope=fresh))
        feed.hold(fresh)
        await feed.catch_up()
        assert rendered.envelopes[1] is fresh
        assert len(rendered.texts) == 2  # `late` once
        # Nothing stays in hand: a third event is rendered, and `late` never again.
        third = make_envelope(seq=3, wall_ms=3_000)
        await store.append(AppendRequest(envelope=third))
        await feed.catch_up()
        assert [e.seq for e in rendered.envelopes] == [1, 2, 3]
        assert feed.held_count == 0


async def _append_told(store: AsyncStore, *envelopes: Envelope) -> list[FeedEntry]:
    """Append as our own send does (one grouped call), keeping the entries it was told."""
    requests = [AppendRequest(envelope=e) for e in envelopes]
    told = await store.run(store.store.append_entries, requests)
    return [entry for _, entry in told if entry is not None]


def count_log_reads(store: AsyncStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the feed's reads of the arrival log (the store's own method still runs)."""
    reads = [0]
    read = store.store.arrivals_after

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(store.store, "arrivals_after", counted)
    return reads


async def test_a_send_told_its_next_numbers_is_published_from_them_not_the_log(
    store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        start = feed.cursor_at(feed.position)
        key, message = make_envelope(seq=1, wall_ms=1_000), make_envelope(seq=2, wall_ms=2_000)
        feed.hold(message)  # as it was sealed
        told = await _append_told(store, key, message)
        reads = count_log_reads(store, monkeypatch)
        await feed.catch_up(told)
        assert reads == [0]
        assert rendered.envelopes == [key, message]
        assert all(a is b for a, b in zip(rendered.envelopes, (key, message), strict=True))
        assert feed.position == 2 and feed.held_count == 0
        later = make_envelope(seq=3, wall_ms=3_000)
        await store.append(AppendRequest(envelope=later))
        await feed.catch_up()  # the tail goes on from there: each event once, in order
        assert [e.seq for e in rendered.envelopes] == [1, 2, 3]
        # A client that reconnects with the first cursor gets what the live clients got.
        replay = await feed.replay(start, feed.position)
        assert replay == [t.replace('"live":true', '"live":false') for t in rendered.texts]


async def test_told_entries_behind_an_unpublished_one_wait_for_the_log(
    store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event numbered before the send's and not yet published goes out first, once."""
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        arrived = make_envelope(seq=1, wall_ms=1_000)
        await store.append(AppendRequest(envelope=arrived))  # its wake not yet served
        told = await _append_told(store, make_envelope(seq=2, wall_ms=2_000))
        reads = count_log_reads(store, monkeypatch)
        await feed.catch_up(told)
        assert reads == [1]
        assert [e.seq for e in rendered.envelopes] == [1, 2]
        assert rendered.envelopes[0] is not arrived  # decoded from the store
        assert rendered.envelopes[1] is told[0].event.envelope  # numbered by the log, not decoded
        await feed.catch_up(told)  # told again, or by a send of its group: nothing again
        assert len(rendered.texts) == 2 and feed.position == 2
        assert feed.held_count == 0  # nor kept in hand


async def test_a_send_publishes_the_arrivals_told_just_before_it_with_no_read(
    store: AsyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An arrival committed just before the send, told and not yet taken by the tail, goes
    out first from its told entry, then the send: the two together are the next numbers."""
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        arrival = await _append_told(store, make_envelope(seq=1, wall_ms=1_000))
        feed.tell(arrival)
        send = await _append_told(store, make_envelope(seq=2, wall_ms=2_000))
        reads = count_log_reads(store, monkeypatch)
        await feed.catch_up(send)
        assert reads == [0]
        assert [e.seq for e in rendered.envelopes] == [1, 2] and feed.position == 2
        await feed.catch_up()  # told nothing: the log is read, and has nothing more
        assert reads == [1] and len(rendered.texts) == 2


async def test_sends_of_one_group_are_each_published_once_whichever_resumes_first(
    store: AsyncStore,
) -> None:
    async with asyncio.timeout(10):
        feed, rendered = await _feed(store)
        first, second = make_envelope(seq=1, wall_ms=1_000), make_envelope(seq=2, wall_ms=2_000)
        told = await _append_told(store, first, second)
        await feed.catch_up(told[1:])  # the second send resumed first: not next, the log read
        await feed.catch_up(told[:1])
        assert [e.seq for e in rendered.envelopes] == [1, 2]
        assert feed.position == 2


class _Tail:
    """The feed's tail task running, its log reads counted, its poll out of the way."""

    def __init__(self, feed: Feed, rendered: _Rendered, reads: list[int]) -> None:
        self.feed, self.rendered, self.reads = feed, rendered, reads

    async def published(self, count: int) -> None:
        """Until `count` frames in all were published (a deadline, not a sleep)."""
        async with asyncio.timeout(5):
            while len(self.rendered.texts) < count:
                self.rendered.more.clear()
                await self.rendered.more.wait()
        for _ in range(5):  # let a second pass of the tail, if one was due, run too
            await asyncio.sleep(0)


@pytest.fixture
async def tail(store: AsyncStore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[_Tail]:
    monkeypatch.setattr(feed_module, "_POLL_S", 60.0)  # only wakes and tells move the tail
    feed, rendered = await _feed(store)
    first_pass = asyncio.Event()
    read = store.store.arrivals_after

    def first(*args: Any, **kwargs: Any) -> Any:
        first_pass.set()  # seen once its pass is done: the read runs on, in the tail's step
        return read(*args, **kwargs)

    monkeypatch.setattr(store.store, "arrivals_after", first)
    task = asyncio.create_task(feed.run())
    async with asyncio.timeout(10):
        await first_pass.wait()  # its first pass reads the log once, as at every start
    reads = count_log_reads(store, monkeypatch)
    yield _Tail(feed, rendered, reads)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_entries_an_arrival_told_are_published_from_them_not_the_log(
    store: AsyncStore, tail: _Tail
) -> None:
    """The receiving home: what the inbox's commit numbered goes out with no read of the log,
    the node's report of the same envelope adds nothing, and a replay gives the same frames."""
    async with asyncio.timeout(10):
        feed, rendered = tail.feed, tail.rendered
        start = feed.cursor_at(feed.position)
        first, second = make_envelope(seq=1, wall_ms=1_000), make_envelope(seq=2, wall_ms=2_000)
        told = await _append_told(store, first, second)
        feed.tell(told)  # `Logged`, then `MessageReceived` for each, as the pump gets them
        feed.arrived(first)
        feed.arrived(second)
        await tail.published(2)
        assert tail.reads == [0]
        assert all(a is b for a, b in zip(rendered.envelopes, (first, second), strict=True))
        assert feed.position == 2 and feed.held_count == 0
        third = make_envelope(seq=3, wall_ms=3_000)
        feed.tell(await _append_told(store, third))
        await tail.published(3)
        assert tail.reads == [0] and rendered.envelopes[2] is third
        replay = await feed.replay(start, feed.position)
        assert replay == [t.replace('"live":true', '"live":false') for t in rendered.texts]


async def test_told_entries_with_an_untold_one_before_them_wait_for_the_log(
    store: AsyncStore, tail: _Tail
) -> None:
    """An event stored with no word to the feed (a receipt of ours sent by another path, a
    commit's outcome that has not reached the pump) and numbered before the told ones goes
    out first, once: the told ones are not the next numbers, so the log is read."""
    async with asyncio.timeout(10):
        feed, rendered = tail.feed, tail.rendered
        untold = make_envelope(seq=1, wall_ms=1_000)
        await store.append(AppendRequest(envelope=untold))
        told = await _append_told(store, make_envelope(seq=2, wall_ms=2_000))
        feed.tell(told)
        await tail.published(2)
        assert tail.reads == [1]
        assert [e.seq for e in rendered.envelopes] == [1, 2]
        assert rendered.envelopes[1] is told[0].event.envelope  # in hand as the log was read
        feed.tell(told)  # told again: nothing again, and no read
        await tail.published(2)
        assert len(rendered.texts) == 2 and tail.reads == [1]


async def test_commits_told_out_of_order_are_published_in_number_order(
    store: AsyncStore, tail: _Tail
) -> None:
    """Two batches committed in one group commit may reach the pump in either order."""
    async with asyncio.timeout(10):
        feed, rendered = tail.feed, tail.rendered
        first = await _append_told(store, make_envelope(seq=1, wall_ms=1_000))
        second = await _append_told(store, make_envelope(seq=2, wall_ms=2_000))
        feed.tell(second)
        feed.tell(first)
        await tail.published(2)
        assert [e.seq for e in rendered.envelopes] == [1, 2] and tail.reads == [0]


async def test_a_wake_besides_told_entries_reads_the_log(store: AsyncStore, tail: _Tail) -> None:
    """Something else stored after the told entries (a release the node reported, a
    membership change) is published at once too, not at the next poll."""
    async with asyncio.timeout(10):
        feed, rendered = tail.feed, tail.rendered
        told = await _append_told(store, make_envelope(seq=1, wall_ms=1_000))
        after = make_envelope(seq=2, wall_ms=2_000)
        await store.append(AppendRequest(envelope=after))
        feed.tell(told)
        feed.arrived(after)  # not told: held and woken for
        await tail.published(2)
        assert [e.seq for e in rendered.envelopes] == [1, 2] and tail.reads == [1]
        assert rendered.envelopes[1] is after


async def test_a_commit_that_moved_entries_is_read_from_the_log(
    store: AsyncStore, tail: _Tail
) -> None:
    """`tell(None)`: the commit moved or removed log entries (a room key opened held events,
    a recall), so only the log says what is there."""
    async with asyncio.timeout(10):
        feed, rendered = tail.feed, tail.rendered
        await store.append(AppendRequest(envelope=make_envelope(seq=1, wall_ms=1_000)))
        feed.tell(None)
        await tail.published(1)
        assert tail.reads == [1] and [e.seq for e in rendered.envelopes] == [1]


async def test_entries_told_without_a_wake_ride_the_next_pass(
    store: AsyncStore, tail: _Tail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own receipt (`tell(wake=False)`) makes no pass of the tail: it goes out with the
    next told arrival, first (its number is), from its told entry, with no read."""
    async with asyncio.timeout(10):
        feed, rendered = tail.feed, tail.rendered
        passes = [0]
        take = feed._take_told

        def counted(more: Any = ()) -> Any:
            passes[0] += 1
            return take(more)

        monkeypatch.setattr(feed, "_take_told", counted)
        receipt = await _append_told(store, make_envelope(seq=1, wall_ms=1_000))
        feed.tell(receipt, wake=False)
        await tail.published(0)  # a pass, were one due, would have run
        assert rendered.texts == [] and passes == [0]
        arrival = await _append_told(store, make_envelope(seq=2, wall_ms=2_000))
        feed.tell(arrival)
        await tail.published(2)
        assert [e.seq for e in rendered.envelopes] == [1, 2] and passes == [1]
        assert rendered.envelopes[0] is receipt[0].event.envelope and tail.reads == [0]
