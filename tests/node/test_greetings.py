"""One greeting per connection (SPEC §13.3): no storm on repeated reports, anew on reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from hearthmesh.node.mesh.greetings import Greetings
from hearthmesh.protocol.errors import HearthError


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

        greetings = Greetings(meet=meet, spawn=spawn)
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
        await greetings.wait("bob")  # a failed meeting is not remembered: dialling retries it
        assert met == ["bob"] * 4
        assert greetings.started == 4
