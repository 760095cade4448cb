"""Two (and three) real home nodes on 127.0.0.1, driven only through the client API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hearthmesh.protocol.envelope import Envelope, MessageId

from .api_helpers import Home, befriend, group_of_three, home, link, open_conversation
from .conftest import PRESENCE

pytestmark = pytest.mark.integration


async def _user(h: Home) -> str:
    user: str = (await h.status())["user_id"]
    return user


async def test_send_receive_and_ticks_move_sent_delivered_read(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = await _user(b)
        async with a.socket() as alice_ws, b.socket() as bob_ws:
            await alice_ws.send(event="create_conversation", recipient_id=bob, request_id="r1")
            created = await alice_ws.next("conversation_created")
            room = created["room_id"]
            await alice_ws.send(event="send", room_id=room, message="hi bob", client_id="c1")
            sent = await alice_ws.next("message_sent")
            assert sent["client_id"] == "c1" and len(sent["message_id"]) == 64
            received = await bob_ws.next("message")
            assert received["message"] == "hi bob" and received["message_id"] == sent["message_id"]
            details = await a.client.call("GET", f"/v1/conversation/{room}/details")
            assert details["messages"][-1]["status"] == "sent"  # durable on alice's node only
            await bob_ws.send(event="ack", message_id=sent["message_id"], status="delivered")
            tick = await alice_ws.next("receipt")
            assert (tick["status"], tick["aggregate"], tick["user_id"]) == (
                "delivered",
                "delivered",
                bob,
            )
            await bob_ws.send(event="ack", message_id=sent["message_id"], status="read")
            tick = await alice_ws.next("receipt")
            assert (tick["status"], tick["aggregate"]) == ("read", "read")
            details = await a.client.call("GET", f"/v1/conversation/{room}/details")
            assert details["messages"][-1]["status"] == "read"
            listing = await b.client.call("GET", "/v1/conversation", params={"page_size": "10"})
            row = listing["conversations"][0]
            assert row["id"] == room and row["LatestMessage"]["message"] == "hi bob"
            assert {"RecipientName", "RecipientProfilePic"} <= row.keys()


async def test_no_false_delivered_before_the_recipient_acks(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = await _user(b)
        async with a.socket() as alice_ws, b.socket() as bob_ws:
            room = await open_conversation(a, bob)
            await alice_ws.send(event="send", room_id=room, message="one", client_id="1")
            sent = await alice_ws.next("message_sent")
            await bob_ws.next("message")  # stored on bob's home node, not yet acked by a client
            details = await a.client.call("GET", f"/v1/conversation/{room}/details")
            assert details["messages"][-1]["status"] == "sent"
            assert not [f for f in alice_ws.seen if f["event"] == "receipt"]
            assert sent["message_id"] == details["messages"][-1]["message_id"]


async def test_a_burst_of_acks_shares_receipts_and_every_tick_arrives(tmp_path: Path) -> None:
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = await _user(b)
        async with a.socket() as alice_ws, b.socket() as bob_ws:
            room = await open_conversation(a, bob)
            for i in range(20):
                await alice_ws.send(event="send", room_id=room, message=f"m{i}", client_id=str(i))
            ids = [(await bob_ws.next("message"))["message_id"] for _ in range(20)]
            node = b.api.service.node
            read_back: list[bytes] = []
            get_event = node.get_event

            async def counted(message_id: MessageId) -> Envelope | None:
                read_back.append(message_id)
                return await get_event(message_id)

            node.get_event = counted  # type: ignore[method-assign]
            for message_id in ids:  # one after another, as a client that shows them does
                await bob_ws.send(event="ack", message_id=message_id, status="delivered")
            ticked = {(await alice_ws.next("receipt"))["message_id"] for _ in range(20)}
            assert ticked == set(ids)
            assert read_back == []  # each ack names a message its client was shown
            receipts = b.api.service.receipts.sent
            assert 1 <= receipts < 20  # coalesced: fewer envelopes (and commits) than acks
            details = await a.client.call("GET", f"/v1/conversation/{room}/details")
            assert {m["status"] for m in details["messages"]} == {"delivered"}


async def test_presence_flips_when_bobs_node_stops_and_starts(tmp_path: Path) -> None:
    async with asyncio.timeout(20), home(tmp_path / "a", **PRESENCE) as a:
        a_addr = (await a.status())["listen_addrs"][0]
        async with a.socket() as alice_ws:
            async with home(tmp_path / "b", bootstrap=(a_addr,), **PRESENCE) as b:
                _, bob = await befriend(a, b)  # presence goes to contacts alone (SPEC §32.4)
                online = await alice_ws.next("presence", lambda f: f["user_id"] == bob)
                assert online["online"] is True
            offline = await alice_ws.next("presence", lambda f: f["user_id"] == bob)
            assert offline["online"] is False
            async with home(tmp_path / "b", bootstrap=(a_addr,), **PRESENCE):
                back = await alice_ws.next("presence", lambda f: f["user_id"] == bob)
                assert back["online"] is True
                profile = await a.client.call("GET", f"/v1/users/{bob}")
                assert profile["online"] is True


async def test_push_reaches_a_webhook_while_bob_has_no_client(tmp_path: Path) -> None:
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receiver(request: web.Request) -> web.Response:
        await pushed.put(json.loads(await request.read()))
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/push/bob", receiver)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}/push/bob"
    try:
        async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
            await link(a, b)
            await b.client.call(
                "POST", "/v1/push/subscriptions", {"kind": "webhook", "endpoint": endpoint}
            )
            bob = await _user(b)
            room = await open_conversation(a, bob)
            sent = await a.client.call(
                "POST", f"/v1/conversation/{room}/messages", {"message": "secret words"}
            )
            notification = await pushed.get()
            assert notification["message_id"] == sent["message_id"]
            assert notification["room_id"] == room
            assert "secret words" not in json.dumps(notification)  # ids only, no plaintext
    finally:
        await runner.cleanup()


async def test_group_of_three_gets_messages_and_aggregated_receipts(tmp_path: Path) -> None:
    async with asyncio.timeout(20), group_of_three(tmp_path) as group:
        alice_ws, bob_ws, carol_ws = group.sockets
        carol = group.users[2]
        room = group.room
        await alice_ws.send(event="get_all_group", request_id="g")
        groups = await alice_ws.next("all_group")
        assert [g["name"] for g in groups["groups"]] == ["hearth"]
        await alice_ws.send(event="send", room_id=room, message="hello all", client_id="g1")
        sent = await alice_ws.next("message_sent")
        for ws in (bob_ws, carol_ws):
            got = await ws.next("message", lambda f: f.get("room_id") == room)
            assert got["message"] == "hello all"
        await bob_ws.send(event="ack", message_id=sent["message_id"], status="read")
        first = await alice_ws.next("receipt")
        assert (first["status"], first["aggregate"]) == ("read", "sent")  # carol not yet
        await carol_ws.send(event="ack", message_id=sent["message_id"], status="delivered")
        second = await alice_ws.next("receipt")
        assert (second["status"], second["aggregate"]) == ("delivered", "delivered")
        await carol_ws.send(event="leave_group", room_id=room, request_id="bye")
        await carol_ws.next("group_left")
        left = await alice_ws.next("membership", lambda f: len(f["members"]) == 2)
        assert carol not in left["members"]
