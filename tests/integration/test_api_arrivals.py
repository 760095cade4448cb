"""What arrives from another home reaches the receiving home's clients from the entries its
store commit numbered, not read back from the arrival log (node/api/feed.py, ARCHITECTURE §3
step 6): the same frames in the same order, and a client that reconnects with an early
cursor gets them again from the log (SPEC §15.4.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.api import feed as feed_module
from hearthmesh.storage.api import FeedEntry
from tests.node.test_api_feed import count_log_reads

from .api_helpers import Home, home, link, open_conversation

pytestmark = pytest.mark.integration

_SAID = [f"m{n}" for n in range(10)]


def _count_tail_passes(bob: Home, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the passes of bob's feed tail (bob sends nothing: no `catch_up`); its 2 s poll
    out of the way, so only wakes and tells move it."""
    monkeypatch.setattr(feed_module, "_POLL_S", 60.0)
    feed, passes = bob.api.service.feed, [0]
    take = feed._take_told

    def counted(more: Any = ()) -> Any:
        passes[0] += 1
        return take(more)

    monkeypatch.setattr(feed, "_take_told", counted)
    return passes


def _receipts_stored(bob: Home, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set as each receipt of bob's is committed (once its entries reached the feed)."""
    receipts, stored = bob.api.service.receipts, asyncio.Event()
    tell = receipts._on_stored
    assert tell is not None

    def told(entries: list[FeedEntry]) -> None:
        tell(entries)
        stored.set()

    monkeypatch.setattr(receipts, "_on_stored", told)
    return stored


async def test_arrivals_reach_clients_in_order_without_reading_the_log_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as alice, home(tmp_path / "b") as bob:
        await link(alice, bob)
        room = await open_conversation(alice, (await bob.status())["user_id"])
        async with bob.socket() as phone:
            reads = count_log_reads(bob.node.store, monkeypatch)
            passes = _count_tail_passes(bob, monkeypatch)
            receipt = _receipts_stored(bob, monkeypatch)
            frames = []
            for text in _SAID:  # one at a time: each arrival a commit of its own on bob's home
                await alice.client.call(
                    "POST", f"/v1/conversation/{room}/messages", {"message": text}
                )
                frame = await phone.next("message")
                frames.append(frame)
                await phone.send(event="ack", message_id=frame["message_id"], status="read")
                await receipt.wait()  # bob's receipt committed (and told) before the next
                receipt.clear()
            assert [f["message"] for f in frames] == _SAID
            # Each arrival (and bob's own receipts) was told; a read is left only for a
            # wake besides them. The log read back every arrival before.
            assert reads[0] <= 2
            # Bob's receipts ride the next arrival's pass: one a message, not two (20).
            assert passes[0] <= len(_SAID) + 1, passes
            start = frames[0]["cursor"]
        async with bob.socket(start) as again:  # the log gives the same frames
            replayed = [await again.next("message") for _ in _SAID[1:]]
            assert replayed == frames[1:]
