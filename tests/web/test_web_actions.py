"""Reply, react, edit and recall in the web client's chat view (SPEC §31), in real Chromium.

Alice uses the browser, paired with her home node; Bob uses his node's API. Each step asserts
what Alice sees and what Bob's node ends up holding, and the page logs no error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from tests.integration.api_helpers import Home, home

from .conftest import WEB_LOOP, open_tab
from .test_web_client import _bob_writes, _pair

pytestmark = WEB_LOOP


async def _bobs_view(b: Home, room: str, where: Any) -> dict[str, Any]:
    """The first message of Bob's view of the chat that satisfies `where`, once there is one."""
    while True:
        details = await b.client.call("GET", f"/v1/conversation/{room}/details")
        for message in details["messages"]:
            if where(message):
                return dict(message)
        await asyncio.sleep(0.05)


async def test_reply_react_edit_and_recall_in_the_chat_view(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(40), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        room = await _bob_writes(a, b, "lunch at noon?")
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        await page.locator(".conversation").click()
        theirs = page.locator(".message.theirs").filter(has_text="lunch at noon?")
        await expect(theirs).to_be_visible()

        # react 👍 to Bob's message: Bob's node sees alice's reaction
        await theirs.get_by_role("button", name="React 👍").click()
        await expect(theirs.get_by_role("button", name="👍 1")).to_be_visible()
        await _bobs_view(b, room, lambda m: m.get("reactions", {}).get("👍"))

        # reply: the reply quotes Bob's message, on both sides
        await theirs.get_by_role("button", name="Reply").click()
        await expect(page.locator("#composing")).to_contain_text("Replying to: lunch at noon?")
        await page.get_by_label("Message", exact=True).fill("yes, see you there")
        await page.get_by_role("button", name="Send").click()
        mine = page.locator(".message.mine").filter(has_text="yes, see you there")
        await expect(mine.locator(".quote")).to_contain_text("lunch at noon?")
        reply = await _bobs_view(b, room, lambda m: m.get("message") == "yes, see you there")
        assert reply["quote"]["message"] == "lunch at noon?"

        # edit our reply: "edited" here, the new text at Bob's
        await expect(mine).to_have_attribute("data-status", "sent")
        await mine.get_by_role("button", name="Edit").click()
        await page.get_by_label("Message", exact=True).fill("yes, see you at 12:30")
        await page.get_by_role("button", name="Send").click()
        edited = page.locator(".message.mine").filter(has_text="yes, see you at 12:30")
        await expect(edited.locator(".edited")).to_have_text("edited")
        await expect(page.locator("#composing")).to_be_hidden()
        await _bobs_view(b, room, lambda m: m.get("message") == "yes, see you at 12:30")

        # recall it: a placeholder here, RECALLED at Bob's
        await edited.get_by_role("button", name="Recall").click()
        await expect(page.locator(".message.mine.recalled")).to_have_text(
            "You recalled this message"
        )
        gone = await _bobs_view(b, room, lambda m: m["is_deleted"])
        assert gone["status"] == "RECALLED" and "message" not in gone
        await expect(page.get_by_text("yes, see you at 12:30")).to_have_count(0)
        await expect(page.locator(".conversation")).to_contain_text("[recalled]")
        await tab.screenshot("chat-actions-desktop")
        await context.close()
        assert tab.errors == []
