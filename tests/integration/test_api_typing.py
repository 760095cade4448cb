"""Typing indicators between two real nodes: ephemeral, pushed to contacts, never stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.protocol.envelope import Kind, RoomId

from .api_helpers import Home, Socket, befriend, home, link, open_conversation

pytestmark = pytest.mark.integration


async def _keep_typing(ws: Socket, room: str) -> None:
    # Clients repeat typing while the user types; gossip may drop the first before the mesh forms.
    while True:
        await ws.send(event="typing", room_id=room, active=True)
        await asyncio.sleep(0.2)


async def _talking(a: Home, b: Home) -> tuple[str, str]:
    """a and b linked, each with the direct conversation open: (room id, b's user id)."""
    await link(a, b)
    alice, bob = await befriend(a, b)  # typing goes to contacts alone (SPEC §32.4)
    room = await open_conversation(a, bob)
    await open_conversation(b, alice)
    return room, bob


async def test_typing_reaches_the_other_member_and_is_never_stored(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        room, bob = await _talking(a, b)
        async with a.socket() as alice_ws, b.socket() as bob_ws, asyncio.TaskGroup() as group:
            typing = group.create_task(_keep_typing(bob_ws, room))
            seen = await alice_ws.next("typing")
            typing.cancel()
            assert (seen["room_id"], seen["user_id"], seen["active"]) == (room, bob, True)
            assert "cursor" not in seen  # ephemeral: not in the resumable feed
        for node in (a.node, b.node):
            page = await node.history(RoomId(bytes.fromhex(room)), limit=100)
            assert all(e.envelope.kind is not Kind.TYPING for e in page.events)


async def test_typing_that_is_never_ended_lapses_after_the_ttl(tmp_path: Path) -> None:
    """Bob's app dies while he types: alice's clients see him stop after the TTL (SPEC §17)."""
    ttl = {"typing_ttl_ms": 700}
    async with (
        asyncio.timeout(15),
        home(tmp_path / "a", api=ttl) as a,
        home(tmp_path / "b") as b,
    ):
        room, bob = await _talking(a, b)
        async with a.socket() as alice_ws, b.socket() as bob_ws, asyncio.TaskGroup() as group:
            typing = group.create_task(_keep_typing(bob_ws, room))
            await alice_ws.next("typing", lambda f: f["active"] is True)
            typing.cancel()  # never followed by active: false
            ended = await alice_ws.next("typing", lambda f: f["active"] is False)
            assert (ended["room_id"], ended["user_id"]) == (room, bob)
            assert "cursor" not in ended
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "api-typing"]
