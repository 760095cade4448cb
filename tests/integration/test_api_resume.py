"""A client's feed cursor survives a restart of its home node (SPEC §15.4.3).

Bob's home node runs as `hearthmesh run` in its own process; alice's node keeps retrying the
messages she sends while bob's node is down. Bob's phone comes back with its last cursor and
gets exactly what it missed, once and in the order bob's node stored it, then the live stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, free_port, spawn_home

from .api_helpers import Home, Socket, home

pytestmark = pytest.mark.integration


@asynccontextmanager
async def _phone(bob: HomeProcess, cursor: str | None = None) -> AsyncIterator[Socket]:
    async with ApiClient(bob.api, bob.token) as client, client.websocket(cursor) as ws:
        socket = Socket(ws)
        socket.ready = await socket.next("ready")
        yield socket


def _number(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])


async def _say(alice: Home, room: str, text: str) -> None:
    await alice.client.call("POST", f"/v1/conversation/{room}/messages", {"message": text})


async def _stored_on(bob: HomeProcess, room: str, count: int) -> None:
    async with ApiClient(bob.api, bob.token) as client:
        while True:
            details = await client.call("GET", f"/v1/conversation/{room}/details")
            if len(details["messages"]) >= count:
                return
            await asyncio.sleep(0.05)  # a peer's store has no event to await here


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
@pytest.mark.slow
async def test_cursor_resumes_exactly_after_the_home_node_restarts(
    tmp_path: Path, stop: str
) -> None:
    api_port, p2p_port, bob_dir = free_port(), free_port(), tmp_path / "bob"
    # Bob's node starts twice as a process (it imports libp2p): 30 s ran out at load 15.
    async with asyncio.timeout(90), home(tmp_path / "alice") as alice:
        bob = await spawn_home(bob_dir, name="bob", api_port=api_port, listen_port=p2p_port)
        try:
            await alice.client.call("POST", "/v1/peers", {"address": bob.addr})
            room = (
                await alice.client.call("POST", "/v1/conversation", {"recipient_id": bob.user_text})
            )["room_id"]
            async with _phone(bob) as phone:
                for text in ("m1", "m2"):
                    await _say(alice, room, text)
                seen = [await phone.next("message") for _ in range(2)]
                assert [f["message"] for f in seen] == ["m1", "m2"]
                cursor = seen[-1]["cursor"]
            if stop == "sigkill":
                await bob.kill()
            else:
                assert await bob.terminate() == 0
            for text in ("m3", "m4"):  # durable on alice's node; her outbox retries bob's
                await _say(alice, room, text)
            alice_addr = (await alice.status())["listen_addrs"][0]
            bob = await spawn_home(
                bob_dir, api_port=api_port, listen_port=p2p_port, bootstrap=(alice_addr,)
            )
            await _stored_on(bob, room, 4)
            async with _phone(bob, cursor) as phone:
                assert phone.ready["resumed"] is True
                missed = [await phone.next("message") for _ in range(2)]
                # Arrival order: alice's retries may bring m4 first; `hlc` orders them.
                assert sorted(f["message"] for f in missed) == ["m3", "m4"]
                await _say(alice, room, "m5")
                assert (await phone.next("message"))["message"] == "m5"
                frames = [f for f in phone.seen if f["event"] == "message"]
                assert len(frames) == 3  # nothing seen before the restart comes again
                numbers = [_number(f["cursor"]) for f in frames]
                assert _number(cursor) < numbers[0] < numbers[1] < numbers[2]
        finally:
            assert await bob.terminate() == 0
