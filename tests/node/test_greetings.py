"""One greeting per connection (SPEC §13.3): no storm on repeated reports, anew on reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from hearthmesh.node.mesh.greetings import Greetings
from hearthmesh.protocol.errors import HearthError


class _Meetings:
    """A `meet` that fails each peer's first `failures[peer]` tries, and a wait for the tries."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = failures
        self.met: list[str] = []
        self._tried = asyncio.Condition()

    async def meet(self, peer: str) -> None:
        self.met.append(peer)
        async with self._tried:
            self._tried.notify_all()
        if self.failures.get(peer, 0) > 0:
            self.failures[peer] -= 1
            raise HearthError("failed to open a stream")

    async def until(self, holds: Callable[[], bool]) -> None:
        """Until `holds()` (the test's outer timeout bounds the wait)."""
        async with self._tried:
            await self._tried.wait_for(holds)


async def test_one_meeting_per_connection_and_a_new_one_after_a_reconnect() -> None:
    met: list[str] = []
    fail = {"bob": False}

    async def meet(peer: str) -> None:
        met.append(peer)
        if fail.get(peer):
            raise HearthError("no hello")

    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:

        def spawn(work: Coroutine[Any, Any, None], name: str) -> None:
            tasks.create_task(work, name=name)

        greetings = Greetings(meet=meet, spawn=spawn, retry_delays_s=(0.0,))
        for _ in range(5):  # the host reports, mDNS finds, the app dials: one meeting
            greetings.start("bob")
        await greetings.wait("bob")
        assert met == ["bob"]
        greetings.forget("bob")  # the connection closed; the next one is met again
        greetings.start("bob")
        await greetings.wait("bob")
        assert met == ["bob", "bob"]
        fail["bob"] = True
        greetings.forget("bob")
        with pytest.raises(HearthError):
            await greetings.wait("bob")
        fail["bob"] = False
        await greetings.wait("bob")  # the failed meeting's retry: a waiter joins it
        assert met == ["bob"] * 4
        assert (greetings.started, greetings.retried) == (3, 1)
        fail["bob"] = True
        greetings.forget("bob")
        with pytest.raises(HearthError):
            await greetings.wait("bob")
        while met != ["bob"] * 6:  # noqa: ASYNC110 - its one retry (after 0 s) fails too: given up
            await asyncio.sleep(0.005)
        fail["bob"] = False
        await greetings.wait("bob")  # a meeting given up is not remembered: dialling retries it
        assert met == ["bob"] * 7


async def test_a_failed_hello_is_tried_again_while_the_connection_stays_up() -> None:
    """A hello that fails while the mesh comes up (a stream that did not open on a loaded
    machine) is the only one on that connection: without a retry the peer's home record was
    never learnt, and its user's deliveries parked as if it were absent."""
    meetings = _Meetings({"bob": 2, "carol": 99})
    met = meetings.met
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:

        def spawn(work: Coroutine[Any, Any, None], name: str) -> None:
            tasks.create_task(work, name=name)

        greetings = Greetings(meet=meetings.meet, spawn=spawn, retry_delays_s=(0.01, 0.01, 0.01))
        greetings.start("bob")
        greetings.start("carol")
        await meetings.until(lambda: met.count("bob") == 3)  # nobody asks: the retries meet bob
        await meetings.until(lambda: met.count("carol") == 4)
        await greetings.wait("bob")  # met on this connection: no new meeting
        assert met.count("bob") == 3
        # Bounded: the first try and three retries. A fourth retry would hold carol's place,
        # waiting out its delay, and a report of the peer would then start nothing; given up,
        # the report starts a new meeting at once.
        started = greetings.started
        greetings.start("carol")
        assert greetings.started == started + 1
        assert met.count("carol") == 4
        await meetings.until(lambda: met.count("carol") == 8)


async def test_a_retry_stops_when_the_connection_closes() -> None:
    meetings = _Meetings({"bob": 99, "carol": 1})
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:

        def spawn(work: Coroutine[Any, Any, None], name: str) -> None:
            tasks.create_task(work, name=name)

        greetings = Greetings(meet=meetings.meet, spawn=spawn, retry_delays_s=(0.05, 0.05))
        greetings.start("bob")
        await meetings.until(lambda: len(meetings.met) == 1)
        greetings.forget("bob")  # closed during the retry's delay
        # The marker: carol's retry, whose delay began after bob's, comes after bob's would.
        greetings.start("carol")
        await meetings.until(lambda: meetings.met.count("carol") == 2)
        assert meetings.met == ["bob", "carol", "carol"]
