"""Friend requests between two real home nodes, through the client API only (SPEC §18)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.api import feed
from hearthmesh.tools.client import ApiRefused
from tests.node.test_api_feed import count_log_reads

from .api_helpers import Home, home, link, open_conversation

pytestmark = pytest.mark.integration


async def _requests(h: Home, direction: str | None = None) -> list[tuple[str, str]]:
    params = None if direction is None else {"direction": direction}
    answer: dict[str, Any] = await h.client.call("GET", "/v1/friends/requests", params=params)
    return [(r["user_id"], r["note"]) for r in answer["requests"]]


async def test_outgoing_requests_are_listed_until_answered(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = (await a.status())["user_id"], (await b.status())["user_id"]
        async with a.socket() as alice_ws, b.socket() as bob_ws:
            await a.client.call("POST", "/v1/friends/requests", {"user_id": bob, "note": "hi"})
            assert await _requests(a, "outgoing") == [(bob, "hi")]
            assert await _requests(a) == []  # incoming is the default
            asked = await bob_ws.next("friend_request")
            assert (asked["user_id"], asked["note"]) == (alice, "hi")
            assert await _requests(b, "incoming") == [(alice, "hi")]
            assert await _requests(b, "outgoing") == []
            await b.client.call("POST", f"/v1/friends/requests/{alice}/accept")
            await alice_ws.next("friend_accepted", lambda f: f["user_id"] == bob)
            assert await _requests(a, "outgoing") == []
            friends = await a.client.call("GET", "/v1/friends")
            assert [f["user_id"] for f in friends["friends"]] == [bob]
        with pytest.raises(ApiRefused) as refused:
            await _requests(a, "sideways")
        assert refused.value.status == 400


async def test_a_withdrawn_request_leaves_both_sides(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = (await a.status())["user_id"], (await b.status())["user_id"]
        async with b.socket() as bob_ws:
            await a.client.call("POST", "/v1/friends/requests", {"user_id": bob, "note": "hey"})
            await bob_ws.next("friend_request")
            cancelled = await a.client.call("DELETE", f"/v1/friends/requests/{bob}")
            assert cancelled == {"user_id": bob, "cancelled": True}
            assert await _requests(a, "outgoing") == []
            withdrawn = await bob_ws.next("friend_declined")
            assert withdrawn["user_id"] == alice
            assert await _requests(b) == []
        with pytest.raises(ApiRefused) as refused:  # nothing left to withdraw
            await a.client.call("DELETE", f"/v1/friends/requests/{bob}")
        assert refused.value.status == 404
        with pytest.raises(ApiRefused):  # and bob has nothing left to accept
            await b.client.call("POST", f"/v1/friends/requests/{alice}/accept")


async def test_our_friend_request_is_told_to_the_feed_not_read_back_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own contact event shows our clients nothing, but it takes a number in the arrival
    log: its commit tells the feed its entry (`on_stored`), so the feed's next pass (here our
    next send's) goes on from the entries it was told, with no read of the log."""
    monkeypatch.setattr(feed, "_POLL_S", 60.0)  # only what happens here moves the feed
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = (await b.status())["user_id"]
        room = await open_conversation(a, bob)
        async with a.socket() as alice_ws:
            await a.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hi"})
            await alice_ws.next("message")
            reads = count_log_reads(a.node.store, monkeypatch)
            await a.client.call("POST", "/v1/friends/requests", {"user_id": bob, "note": "hi"})
            await a.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "yo"})
            assert (await alice_ws.next("message"))["message"] == "yo"
            assert reads == [0]
