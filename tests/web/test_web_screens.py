"""The web client's screens beyond chat (issue #17 slice 2, SPEC §15.7.4-15.7.7), in real Chromium.

Alice uses the browser, paired with her home node; Bob uses his node's API. Each test asserts
what a person sees, what Bob's node ends up holding, and that the page logged no error.
"""

from __future__ import annotations

import asyncio
import re
import struct
import zlib
from pathlib import Path

from playwright.async_api import Browser, FilePayload, expect

from tests.integration.api_helpers import Home, home, link
from tests.integration.conftest import wait_until_async
from tests.integration.test_media import _download

from .conftest import open_tab
from .test_web_client import _bob_writes, _pair


def _png(width: int = 8, height: int = 8) -> bytes:
    """A real PNG (solid red), so the browser has pixels to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def _user(h: Home) -> str:
    user: str = (await h.status())["user_id"]
    return user


async def test_an_image_is_sent_and_shown_typing_shows_and_days_are_separated(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        room = await _bob_writes(a, b, "hi")
        bob = await _user(b)
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        await page.locator(".conversation").click()
        await expect(page.get_by_role("separator")).to_have_text("Today")
        async with b.socket() as bob_ws:
            picture = _png()
            await page.get_by_label("Attach a file").set_input_files(
                FilePayload(name="red.png", mimeType="image/png", buffer=picture)
            )
            received = await bob_ws.next("message", lambda f: f["sender_id"] != bob)
            assert received["type"] == "image" and received["media"]["size"] == len(picture)
            image = page.locator(".message.mine img")
            await expect(image).to_have_attribute("alt", "red.png")
            await expect(image).to_have_js_property("naturalWidth", 8)  # decoded, not broken
            await expect(page.locator(".message.mine")).to_have_attribute("data-status", "sent")
            status, blob, _ = await _download(b, received["media"]["digest"])
            assert (status, blob) == (200, picture)  # Bob's node fetched the very bytes

            typing = page.locator("#typing")
            await bob_ws.send(event="typing", room_id=room, active=True)
            await expect(typing).to_have_text("typing…")
            await bob_ws.send(event="typing", room_id=room, active=False)
            await expect(typing).to_have_text("")
        await tab.screenshot("chat-image-desktop")
        await context.close()
        assert tab.errors == []


async def test_a_group_is_created_a_member_added_and_left(tmp_path: Path, browser: Browser) -> None:
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = await _user(a), await _user(b)
        context, tab = await open_tab(browser, a.url, phone=True)
        await _pair(a, tab)
        page = tab.page
        await page.get_by_role("button", name="New group").click()
        await page.get_by_label("Group name").fill("Hike")
        await page.get_by_role("button", name="Create group").click()
        await expect(page.get_by_role("heading", name="Hike")).to_be_visible()
        await page.get_by_role("button", name="Members").click()
        await expect(page.locator(".members .person")).to_have_count(1)  # Alice alone, admin
        await expect(page.locator(".members .role")).to_have_text("admin")
        await page.get_by_label("Add a member by user id").fill(bob)
        await page.get_by_role("button", name="Add member").click()
        await expect(page.locator("#presence")).to_have_text("2 members")
        await expect(page.locator(".members .person")).to_have_count(2)  # the panel stays open

        async def groups_with_alice() -> int:
            groups = (await b.client.call("GET", "/v1/groups"))["groups"]
            return sum(g["name"] == "Hike" and alice in g["members"] for g in groups)

        await wait_until_async(groups_with_alice, 1)  # Bob's node holds the group
        (group,) = (await b.client.call("GET", "/v1/groups"))["groups"]
        await b.client.call(
            "POST", f"/v1/conversation/{group['id']}/messages", {"message": "count me in"}
        )
        theirs = page.locator(".message.theirs", has_text="count me in")
        await expect(theirs.locator(".sender")).to_have_text(bob[:12])
        await tab.screenshot("group-phone")

        members = page.locator("#members")
        if await members.is_hidden():  # a reconnect under load redraws the chat, panel closed
            await page.get_by_role("button", name="Members").click()
        await page.get_by_role("button", name="Leave group").click()
        await expect(page.locator(".conversation")).to_have_count(0)

        async def alice_left() -> int:
            groups = (await b.client.call("GET", "/v1/groups"))["groups"]
            return int(alice not in groups[0]["members"])

        await wait_until_async(alice_left, 1)  # Bob's node sees Alice leave
        await context.close()
        assert tab.errors == []


async def test_a_friend_request_is_accepted_and_presence_flips_when_the_node_stops(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(25), home(tmp_path / "a") as a:
        alice = await _user(a)
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        async with home(tmp_path / "b") as b:
            await _bob_writes(a, b, "hello stranger")
            requests = page.locator("#message-requests .conversation")
            await expect(requests).to_have_count(1)  # not a friend: listed apart
            await expect(page.locator("#conversations .conversation")).to_have_count(0)
            await b.client.call("POST", "/v1/friends/requests", {"user_id": alice, "note": "hi"})
            await expect(page.locator("#request-count")).to_have_text("1")
            await page.get_by_role("button", name="Friends").click()
            await tab.screenshot("friend-request")
            await page.get_by_role("button", name="Accept").click()

            async def alice_is_a_friend() -> int:
                listed = (await b.client.call("GET", "/v1/friends"))["friends"]
                return int([f["user_id"] for f in listed] == [alice])

            await wait_until_async(alice_is_a_friend, 1)  # Bob's node lists her
            await expect(page.locator("#friend-list .person")).to_have_count(1)
            await expect(requests).to_have_count(0)  # a friend's chat joins the list
            await page.locator("#conversations .conversation").click()
            await expect(page.locator("#presence")).to_have_text("online")
            await tab.screenshot("presence-online")
        # Bob's node stopped (it says so on the way out): the open chat shows when he was seen
        await expect(page.locator("#presence")).to_have_text(re.compile("^last seen "))
        await expect(page.locator(".conversation .dot")).not_to_have_class("dot online")
        await context.close()
        assert tab.errors == [], tab.errors
