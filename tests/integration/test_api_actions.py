"""Message actions end to end through the client API of two real nodes (SPEC §31)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.api import feed
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.tools.client import ApiRefused
from tests.integration.api_helpers import Home, home, link, open_conversation
from tests.node.test_api_feed import count_log_reads


async def _messages(h: Home, room: str) -> list[dict[str, Any]]:
    details = await h.client.call("GET", f"/v1/conversation/{room}/details")
    messages: list[dict[str, Any]] = details["messages"]
    return messages


async def _until(h: Home, room: str, check: Any) -> list[dict[str, Any]]:
    """The conversation's messages once `check(messages)` holds (the caller bounds the wait;
    a conversation not known there yet is waited for too)."""
    while True:
        try:
            messages = await _messages(h, room)
        except ApiRefused as exc:
            if exc.status != 404:
                raise
        else:
            if check(messages):
                return messages
        await asyncio.sleep(0.02)


async def _unread(h: Home) -> int:
    (row,) = (await h.client.call("GET", "/v1/conversation"))["conversations"]
    unread: int = row["unread"]
    return unread


def _by_id(messages: list[dict[str, Any]], message_id: str) -> dict[str, Any]:
    return next(m for m in messages if m["message_id"] == message_id)


async def _send(h: Home, room: str, text: str, **extra: Any) -> str:
    answer = await h.client.call(
        "POST", f"/v1/conversation/{room}/messages", {"message": text, **extra}
    )
    message_id: str = answer["message_id"]
    return message_id


async def test_edit_react_reply_recall_and_delete_for_me_between_two_nodes(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice = (await a.status())["user_id"]
        bob = (await b.status())["user_id"]
        room = await open_conversation(b, alice)
        hello = await _send(b, room, "helo")
        await _until(a, room, lambda ms: any(m["message_id"] == hello for m in ms))

        # edit: the sender's latest text is shown, every edit kept, on both sides
        await b.client.call("POST", f"/v1/messages/{hello}/edit", {"message": "hello"})
        seen = await _until(a, room, lambda ms: _by_id(ms, hello).get("edited"))
        assert _by_id(seen, hello)["message"] == "hello"
        assert [e["message"] for e in _by_id(seen, hello)["edits"]] == ["hello"]

        # reactions: one per user per emoji, removable
        for _ in range(2):
            await a.client.call("POST", f"/v1/messages/{hello}/reactions", {"emoji": "👍"})
        seen = await _until(b, room, lambda ms: _by_id(ms, hello)["reactions"])
        assert _by_id(seen, hello)["reactions"] == {"👍": [alice]}
        await a.client.call(
            "POST", f"/v1/messages/{hello}/reactions", {"emoji": "👍", "active": False}
        )
        await _until(b, room, lambda ms: _by_id(ms, hello)["reactions"] == {})
        assert await _unread(b) == 0  # reactions change a message; they are no message

        # a recall or an edit of someone else's message is refused with its code, nothing sent
        before = len(await _messages(a, room))
        for action, body in (("recall", None), ("edit", {"message": "mine now"})):
            with pytest.raises(ApiRefused) as refused:
                await a.client.call("POST", f"/v1/messages/{hello}/{action}", body)
            assert refused.value.status == 400 and refused.value.body["error"]["code"] == 65
        assert len(await _messages(a, room)) == before

        # a reply quotes what it answers
        reply = await _send(a, room, "hi bob", reply_to=hello)
        seen = await _until(b, room, lambda ms: any(m["message_id"] == reply for m in ms))
        assert await _unread(b) == 1
        quote = _by_id(seen, reply)["quote"]
        assert quote["message_id"] == hello and quote["message"] == "hello" and quote["found"]

        # delete for me: gone from alice's views, not from bob's
        await a.client.call("DELETE", f"/v1/messages/{reply}")
        assert all(m["message_id"] != reply for m in await _messages(a, room))
        assert any(m["message_id"] == reply for m in await _messages(b, room))

        # recall: RECALLED and is_deleted everywhere; the body is purged on both homes
        await b.client.call("POST", f"/v1/messages/{hello}/recall")
        for h in (a, b):
            seen = await _until(h, room, lambda ms: _by_id(ms, hello)["is_deleted"])
            view = _by_id(seen, hello)
            assert view["status"] == "RECALLED" and "message" not in view
        for h in (a, b):
            target = MessageId(bytes.fromhex(hello))
            while await h.node.get_event(target) is not None:  # noqa: ASYNC110 - a store read
                await asyncio.sleep(0.02)
        with pytest.raises(ApiRefused) as refused:  # nothing left to act on
            await b.client.call("POST", f"/v1/messages/{hello}/edit", {"message": "again"})
        assert refused.value.status == 404
        assert bob  # both users took part


async def test_a_message_written_offline_sorts_where_it_was_written(tmp_path: Path) -> None:
    """SPEC §31.6: the client's clock runs 5 minutes fast; a message it wrote an hour before
    sending sorts an hour back, by the home's clock, before a message sent in between."""
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice = (await a.status())["user_id"]
        room = await open_conversation(b, alice)
        earlier = await _send(b, room, "sent two minutes ago")
        skew_ms, now_ms = 5 * 60_000, int(time.time() * 1000)
        offline = await _send(
            b,
            room,
            "written an hour ago",
            written_ms=now_ms + skew_ms - 3_600_000,
            sent_ms=now_ms + skew_ms,
        )
        for h in (a, b):
            seen = await _until(h, room, lambda ms: any(m["message_id"] == offline for m in ms))
            order = [m["message_id"] for m in seen]
            assert order.index(offline) < order.index(earlier)
            written = _by_id(seen, offline)["written_ms"]
            assert abs(written - (now_ms - 3_600_000)) < 60_000  # within the skew bound


async def test_forward_copies_the_content_marked_forwarded(tmp_path: Path) -> None:
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice = (await a.status())["user_id"]
        room = await open_conversation(b, alice)
        original = await _send(b, room, "pass it on")
        await _until(a, room, lambda ms: any(m["message_id"] == original for m in ms))
        answer = await a.client.call("POST", f"/v1/messages/{original}/forward", {"room_id": room})
        seen = await _until(
            b, room, lambda ms: any(m["message_id"] == answer["action_id"] for m in ms)
        )
        copy = _by_id(seen, answer["action_id"])
        assert copy["message"] == "pass it on" and copy["forwarded"] and copy["sender_id"] == alice


async def _frame(ws: Any, check: Any) -> dict[str, Any]:
    """The next WebSocket frame `check` accepts (the caller bounds the wait)."""
    while True:
        frame: dict[str, Any] = await ws.receive_json()
        if check(frame):
            return frame


async def test_our_clients_see_our_own_action_at_once_not_at_the_feeds_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit (over HTTP) and a recall (over the WebSocket) by our user reach our user's
    WebSocket client as a send does, when they are stored: before, only the feed's poll
    (every 2 s) published them. Here the poll is an hour, so without the publish neither
    comes."""
    monkeypatch.setattr(feed, "_POLL_S", 3600.0)
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        room = await open_conversation(a, (await b.status())["user_id"])
        async with a.client.websocket() as ws:
            sent = await _send(a, room, "helo")
            await _frame(ws, lambda f: f.get("message_id") == sent)
            await a.client.call("POST", f"/v1/messages/{sent}/edit", {"message": "hello"})
            edited = await _frame(
                ws, lambda f: f.get("event") == "message_updated" and f.get("edited")
            )
            assert edited["message_id"] == sent and edited["message"] == "hello"
            await ws.send_json({"event": "recall", "message_id": sent})
            recalled = await _frame(
                ws, lambda f: f.get("event") == "message_updated" and f.get("is_deleted")
            )
            assert recalled["message_id"] == sent and recalled["status"] == "RECALLED"


async def test_an_action_reaches_our_clients_from_its_commit_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit or a reaction goes to our user's clients at once from the entries its commit
    made (`Node.send`'s `on_stored`), as a client's send does: no read of the arrival log."""
    monkeypatch.setattr(feed, "_POLL_S", 60.0)  # only what happens here moves the feed
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = (await b.status())["user_id"]
        room = await open_conversation(b, (await a.status())["user_id"])
        async with b.socket() as phone:
            hello = await _send(b, room, "helo")
            await phone.next("message", lambda f: f["message_id"] == hello)
            reads = count_log_reads(b.node.store, monkeypatch)
            await b.client.call("POST", f"/v1/messages/{hello}/edit", {"message": "hello"})
            edited = await phone.next("message_updated")
            await b.client.call("POST", f"/v1/messages/{hello}/reactions", {"emoji": "👍"})
            reacted = await phone.next("message_updated", lambda f: bool(f["reactions"]))
            assert (edited["message"], reacted["reactions"]) == ("hello", {"👍": [bob]})
            assert reads == [0]
