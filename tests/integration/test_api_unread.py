"""Unread counts in the conversation list, counted by the home node (SPEC §15.5.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.api_helpers import Home, home, link, open_conversation
from tests.integration.conftest import wait_until_async


async def _unread(h: Home) -> int:
    (row,) = (await h.client.call("GET", "/v1/conversation"))["conversations"]
    unread: int = row["unread"]
    return unread


async def test_the_list_counts_unread_until_the_newest_is_read_or_answered(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice = (await a.status())["user_id"]
        room = await open_conversation(b, alice)
        async with a.socket() as alice_ws, b.socket() as bob_ws:
            for text in ("one", "two", "three"):
                await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": text})
            arrived = [await alice_ws.next("message") for _ in range(3)]
            assert await _unread(a) == 3
            newest = max(arrived, key=lambda m: m["hlc"])
            # reading the newest reads what came before it
            await alice_ws.send(event="ack", message_id=newest["message_id"], status="read")

            async def read() -> int:
                return 3 - await _unread(a)

            await wait_until_async(read, 3)
            await a.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hi"})
            # "four" answers "hi" only once bob's home has it (its clock then orders "four"
            # after it, §4); sent sooner, the two were concurrent, and in one millisecond the
            # history could order "four" first (seen in CI: 0 unread)
            await bob_ws.next("message", lambda f: f["message"] == "hi")
            await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "four"})
            await alice_ws.next("message", lambda f: f["message"] == "four")
            assert await _unread(a) == 1  # counted back to our own reply


async def test_a_read_on_one_client_reaches_our_other_clients_after_the_count_dropped(
    tmp_path: Path,
) -> None:
    """A phone and a browser on one home node: what the phone reads leaves the browser's
    unread count as a `read` frame, sent once the node counts it read (SPEC §15.4.1); a
    delivered ack tells the other clients nothing."""
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice = (await a.status())["user_id"]
        room = await open_conversation(b, alice)
        async with a.socket() as phone, a.socket() as browser:
            for text in ("one", "two"):
                await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": text})
            one, two = sorted([await phone.next("message") for _ in range(2)], key=_hlc)
            await phone.send(event="ack", message_id=one["message_id"], status="delivered")
            await phone.send(event="ack", message_id=two["message_id"], status="read")
            read = await browser.next("read")
            assert read["room_id"] == room
            assert read["message_ids"] == [two["message_id"]]
            assert read["device_id"] == (await a.status())["device_id"]
            assert await _unread(a) == 0


def _hlc(frame: dict[str, Any]) -> Any:
    return frame["hlc"]
