"""Profiles, blocking and message requests between real home nodes, through the client API
(SPEC §32)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.events import DeliveredToHome
from hearthmesh.protocol.content import PROFILE_CONTENT_TYPE, ProfileCard, encode_profile
from hearthmesh.protocol.envelope import Kind, MessageId, RoomId
from hearthmesh.tools.client import ApiRefused

from .api_helpers import Home, befriend, home, link, open_conversation
from .test_media import _download, _upload

pytestmark = pytest.mark.integration

_PNG = b"\x89PNG\r\n\x1a\n" + b"picture" * 40


async def _user(h: Home) -> str:
    user: str = (await h.status())["user_id"]
    return user


async def _until(probe: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `probe` holds (bounded by the caller's timeout)."""
    while not await probe():  # noqa: ASYNC110 - a listing has no event to wait on
        await asyncio.sleep(0.05)


async def _row(h: Home, room: str, requests: str = "include") -> dict[str, Any] | None:
    listing = await h.client.call("GET", "/v1/conversation", params={"requests": requests})
    return next((r for r in listing["conversations"] if r["id"] == room), None)


async def test_a_name_and_picture_change_is_seen_by_a_contact_on_another_node(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = await befriend(a, b)
        room = await open_conversation(b, alice)
        digest = (await _upload(a, _PNG, "image/png"))["digest"]
        async with b.socket() as bob_ws:
            await a.client.call(
                "PUT",
                "/v1/profile",
                {"display_name": "Alice A.", "bio": "hi", "profile_pic": digest},
            )
            told = await bob_ws.next("profile", lambda f: f["display_name"] == "Alice A.")
        assert (told["user_id"], told["profile_pic"]) == (alice, digest)

        async def named() -> bool:
            row = await _row(b, room)
            return row is not None and row["RecipientName"] == "Alice A."

        await _until(named)
        row = await _row(b, room)
        assert row is not None and row["RecipientProfilePic"] == digest and not row["request"]
        details = await b.client.call("GET", f"/v1/conversation/{room}/details")
        names = {p["user_id"]: p["display_name"] for p in details["people"]}
        assert names[alice] == "Alice A."  # member lists name people by their profiles
        seen = await b.client.call("GET", f"/v1/users/{alice}")
        assert (seen["display_name"], seen["bio"], seen["profile_pic"]) == (
            "Alice A.",
            "hi",
            digest,
        )

        async def fetched() -> bool:
            return (await _download(b, digest))[0] == 200

        await _until(fetched)  # bob's home fetched the sealed picture and opens it for bob
        assert (await _download(b, digest))[:2] == (200, _PNG)
        await a.client.call("PUT", "/v1/profile", {"display_name": "Alice B."})

        async def renamed() -> bool:
            seen = await b.client.call("GET", f"/v1/users/{alice}")
            return bool(seen["display_name"] == "Alice B.")

        await _until(renamed)
        assert (await b.client.call("GET", f"/v1/users/{alice}"))["profile_pic"] == digest
        assert bob != alice


async def test_a_strangers_profile_and_messages_land_as_a_message_request(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "m") as m:
        await link(m, a)
        alice = await _user(a)
        await m.client.call("PUT", "/v1/profile", {"display_name": "Totally Your Bank"})
        room = await open_conversation(m, alice)
        async with a.socket() as alice_ws:
            await m.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "psst"})
            # an honest node sends no profile to a non-contact: this one pushes it anyway
            card = ProfileCard(display_name="Your Bank")
            await m.node.send(
                RoomId(bytes.fromhex(room)),
                encode_profile(card),
                content_type=PROFILE_CONTENT_TYPE,
                kind=Kind.PROFILE,
            )
            await m.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "end"})
            # released in the sender's order: the profile came before "end" (SPEC §8)
            await alice_ws.next("message", lambda f: f["message"] == "end")
        assert not [f for f in alice_ws.seen if f["event"] == "profile"]  # a stranger's: none
        page = await a.node.history(RoomId(bytes.fromhex(room)))
        assert any(e.envelope.kind is Kind.PROFILE for e in page.events)  # stored as sent
        assert await _row(a, room, "exclude") is None  # not in the main list
        row = await _row(a, room, "only")
        assert row is not None and row["request"] is True
        assert row["RecipientName"] != "Your Bank"  # a stranger's profile shows nothing
        shown = await a.client.call("GET", f"/v1/users/{await _user(m)}")
        assert shown["display_name"] == ""
        await a.client.call("POST", f"/v1/conversation/{room}/accept")
        row = await _row(a, room, "exclude")
        assert row is not None and row["request"] is False
        assert await _row(a, room, "only") is None


async def test_a_blocked_users_messages_are_acked_as_stored_and_never_shown(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = await befriend(a, b)
        room = await open_conversation(b, alice)
        blocked = await a.client.call("PUT", f"/v1/friends/blocked/{bob}")
        assert blocked == {"user_id": bob, "blocked": True}
        listed = await a.client.call("GET", "/v1/friends/blocked")
        assert [u["user_id"] for u in listed["blocked"]] == [bob]
        before = await a.client.call("GET", f"/v1/conversation/{room}/details")
        events = b.node.events()
        sent = await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hey"})
        async for event in events:  # alice's home acked it as stored: nothing tells bob
            if isinstance(event, DeliveredToHome) and event.message_id.hex() == sent["message_id"]:
                break
        after = await a.client.call("GET", f"/v1/conversation/{room}/details")
        assert after["messages"] == before["messages"]
        assert await a.node.get_event(MessageId(bytes.fromhex(sent["message_id"]))) is None
        with pytest.raises(ApiRefused) as refused:
            await a.client.call("POST", "/v1/conversation", {"recipient_id": bob})
        assert refused.value.status == 409
        await a.client.call("DELETE", f"/v1/friends/blocked/{bob}")
        async with a.socket() as alice_ws:
            await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "back"})
            await alice_ws.next("message", lambda f: f["message"] == "back")
        with pytest.raises(ApiRefused) as refused:
            await a.client.call("DELETE", f"/v1/friends/blocked/{bob}")
        assert refused.value.status == 404


async def test_presence_visibility_is_a_setting(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a:
        assert await a.client.call("GET", "/v1/privacy") == {"presence": "contacts"}
        assert await a.client.call("PUT", "/v1/privacy", {"presence": "nobody"}) == {
            "presence": "nobody"
        }
        with pytest.raises(ApiRefused) as refused:
            await a.client.call("PUT", "/v1/privacy", {"presence": "everyone"})
        assert refused.value.status == 400
        assert await a.client.call("GET", "/v1/privacy") == {"presence": "nobody"}


async def test_a_friend_link_reaches_a_user_whose_node_we_never_met(tmp_path: Path) -> None:
    """The link (and its QR code) carries the signed home record: no dial, no DHT needed."""
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "c") as c:
        alice, carol = await _user(a), await _user(c)
        invite = await a.client.call("GET", "/v1/friends/invite")
        assert invite["link"].startswith(f"hearthmesh:friend/{alice}?record=")
        assert invite["qr"].startswith("data:image/svg+xml")
        await c.client.call("POST", "/v1/friends/requests", {"link": invite["link"], "note": "yo"})

        async def asked() -> bool:
            pending = await a.client.call("GET", "/v1/friends/requests")
            return [r["user_id"] for r in pending["requests"]] == [carol]

        await _until(asked)
        forged = invite["link"].replace(alice, carol)  # carol's id with alice's record
        with pytest.raises(ApiRefused) as refused:
            await c.client.call("POST", "/v1/friends/requests", {"link": forged})
        assert refused.value.status == 400
