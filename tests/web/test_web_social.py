"""The web client's social screens (SPEC §32), in real Chromium: others' pictures, message
requests, blocking and unblocking, the friend code.

Alice uses the browser, paired with her home node; Bob (a friend) and Mallory (a stranger) use
their nodes' APIs. Each test asserts what a person sees, what the nodes hold, and that the page
logged no error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.integration.api_helpers import befriend, home, link, open_conversation
from tests.integration.test_media import _upload

from .conftest import WEB_LOOP, open_tab
from .test_web_client import _pair
from .test_web_screens import _png

pytestmark = WEB_LOOP


async def test_a_friends_picture_shows_a_strangers_chat_is_a_request_and_blocking_hides_it(
    tmp_path: Path, browser: Browser
) -> None:
    async with (
        asyncio.timeout(40),
        home(tmp_path / "a") as a,
        home(tmp_path / "b") as b,
        home(tmp_path / "m") as m,
    ):
        await link(b, a)
        await link(m, a)
        bob, alice = await befriend(b, a)
        mallory = (await m.status())["user_id"]
        digest = (await _upload(b, _png(16, 16), "image/png"))["digest"]
        await b.client.call("PUT", "/v1/profile", {"display_name": "Bob", "profile_pic": digest})
        room = await open_conversation(b, alice)
        await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hi"})
        request = await open_conversation(m, alice)
        await m.client.call("POST", f"/v1/conversation/{request}/messages", {"message": "psst"})

        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        friend_row = page.locator(f'#conversations .conversation[data-room="{room}"]')
        await expect(friend_row.locator(".name")).to_have_text("Bob")  # Bob's profile reached her
        picture = friend_row.locator("img.picture")
        await expect(picture).to_have_attribute("src", f"/v1/media/{digest}")
        await expect(picture).to_have_js_property("naturalWidth", 16)  # fetched, opened, decoded
        requests = page.locator("#message-requests .conversation")
        await expect(requests).to_have_count(1)  # the stranger's chat is apart
        await expect(page.locator("#requests-heading")).to_be_visible()
        await tab.screenshot("message-request")

        await page.get_by_role("button", name=f"Block {mallory[:12]}").click()
        await expect(requests).to_have_count(0)
        listed = await a.client.call("GET", "/v1/friends/blocked")
        assert [u["user_id"] for u in listed["blocked"]] == [mallory]
        await page.get_by_role("button", name="Friends").click()
        unblock = page.get_by_role("button", name="Unblock")
        await expect(unblock).to_have_count(1)
        await tab.screenshot("friends-blocked")
        await unblock.click()
        await expect(unblock).to_have_count(0)
        await expect(requests).to_have_count(1)
        await page.get_by_role("button", name=f"Accept the chat with {mallory[:12]}").click()
        await expect(requests).to_have_count(0)
        await expect(
            page.locator(f'#conversations .conversation[data-room="{request}"]')
        ).to_have_count(1)
        assert (await a.client.call("GET", "/v1/friends/blocked"))["blocked"] == []

        await page.get_by_role("button", name="Show my friend code").click()
        await expect(page.locator("#invite-link")).to_contain_text(f"hearthmesh:friend/{alice}")
        await page.get_by_label("Who sees when I am online and typing").select_option("nobody")
        await expect(page.locator("#status")).to_have_text("No one sees when you are online.")
        assert await a.client.call("GET", "/v1/privacy") == {"presence": "nobody"}
        await context.close()
        assert tab.errors == [], tab.errors
        assert bob != mallory
