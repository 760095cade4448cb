"""The web client in real Chromium against real home nodes (issue #17, SPEC §15.7).

Alice uses the browser, paired with her home node; Bob uses the API of his. Each test asserts
what a person sees (text, ticks as `data-status`), and that the page logged no error.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import Browser, expect

from hearthmesh.node.api.paired_clients import COOKIE_NAME
from hearthmesh.node.api.tls import KEY_FILE, ensure_certificate
from tests.integration.api_helpers import Home, home, link

from .conftest import WEB_LOOP, Tab, open_tab

pytestmark = WEB_LOOP


async def _pair(h: Home, tab: Tab) -> None:
    offer = await h.client.call("POST", "/v1/clients/pair")
    await tab.page.get_by_label("Pairing code").fill(offer["code"])
    await tab.page.get_by_role("button", name="Pair").click()
    await expect(tab.page.get_by_role("heading", name="Chats")).to_be_visible()


async def _bob_writes(a: Home, b: Home, *texts: str) -> str:
    """Link the nodes; Bob (through his API) writes `texts` to Alice; the room id."""
    await link(a, b)
    alice = (await a.status())["user_id"]
    room: str = (await b.client.call("POST", "/v1/conversation", {"recipient_id": alice}))[
        "room_id"
    ]
    for text in texts:
        await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": text})
    return room


async def test_pair_a_browser_by_code_and_by_link(tmp_path: Path, browser: Browser) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as h:
        context, tab = await open_tab(browser, h.url)
        await expect(tab.page.get_by_role("heading", name="Pair this browser")).to_be_visible()
        await tab.screenshot("pairing")
        await tab.page.get_by_label("Pairing code").fill("WRONG-CODE")
        await tab.page.get_by_role("button", name="Pair").click()
        await expect(tab.page.get_by_role("alert")).to_have_text(
            "wrong, used or expired pairing code"
        )
        tab.errors.clear()  # the refused code's 401 is logged by Chromium itself
        await _pair(h, tab)
        user = (await h.status())["user_id"]
        await expect(tab.page.locator("#my-id")).to_have_text(user)
        await expect(tab.page.locator("#connection")).to_have_text("online")
        await tab.page.reload()  # the pairing outlives a reload
        await expect(tab.page.get_by_role("heading", name="Chats")).to_be_visible()
        await context.close()

        offer = await h.client.call("POST", "/v1/clients/pair")
        context, linked = await open_tab(browser, offer["url"], phone=True)
        await expect(linked.page.get_by_role("heading", name="Chats")).to_be_visible()
        assert "#pair" not in linked.page.url  # the used code leaves the address bar
        assert len((await h.client.call("GET", "/v1/clients"))["clients"]) == 2
        await context.close()
        assert tab.errors == [] and linked.errors == []


async def test_chat_both_ways_with_ticks_then_reload_without_duplicates(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = (await b.status())["user_id"]
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        async with b.socket() as bob_ws:
            await page.get_by_role("button", name="New chat").click()
            await page.get_by_label("Friend's user id").fill(bob)
            await page.get_by_role("button", name="Start chat").click()
            await page.get_by_role("textbox", name="Message").fill("hello bob")
            await page.keyboard.press("Enter")
            received = await bob_ws.next("message")
            assert received["message"] == "hello bob"
            mine = page.locator(".message.mine", has_text="hello bob")
            await expect(mine).to_have_attribute("data-status", "sent")
            await bob_ws.send(event="ack", message_id=received["message_id"], status="delivered")
            await expect(mine).to_have_attribute("data-status", "delivered")
            await bob_ws.send(event="ack", message_id=received["message_id"], status="read")
            await expect(mine).to_have_attribute("data-status", "read")

            room = received["room_id"]
            await b.client.call(
                "POST", f"/v1/conversation/{room}/messages", {"message": "hi alice"}
            )
            await expect(page.locator(".message.theirs", has_text="hi alice")).to_be_visible()
            # the open chat tells bob it was read
            await bob_ws.next("receipt", lambda f: f["status"] == "read")
        await tab.screenshot("chat-desktop")

        await page.reload()
        await page.locator(".conversation").first.click()
        await expect(page.locator(".message.theirs", has_text="hi alice")).to_have_count(1)
        await expect(page.locator(".message.mine", has_text="hello bob")).to_have_count(1)
        await expect(page.locator(".message.mine")).to_have_attribute("data-status", "read")
        await context.close()
        assert tab.errors == []


async def test_phone_layout_conversation_list_and_chat(tmp_path: Path, browser: Browser) -> None:
    """What Alice reads on her phone is read on her desktop browser too (SPEC §15.4.1 `read`)."""
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await _bob_writes(a, b, "one", "two", "three")
        context, tab = await open_tab(browser, a.url, phone=True)
        await _pair(a, tab)
        desk_context, desk = await open_tab(browser, a.url)
        await _pair(a, desk)
        desk_unread = desk.page.locator(".conversation .unread")
        await expect(desk_unread).to_have_text("3")
        page = tab.page
        row = page.locator(".conversation")
        await expect(row.locator(".unread")).to_have_text("3")
        await expect(row.locator(".preview")).to_have_text("three")
        await tab.screenshot("list-phone")
        await row.click()
        await expect(page.locator(".message.theirs")).to_have_count(3)
        await expect(page.locator(".list")).to_be_hidden()  # one column on a phone
        await tab.screenshot("chat-phone")
        await page.get_by_role("button", name="Back to conversations").click()
        await expect(row.locator(".unread")).to_have_count(0)  # read now
        await expect(desk_unread).to_have_count(0)  # and on the desktop
        await desk_context.close()
        await context.close()
        assert tab.errors == []
        assert desk.errors == []


async def test_reconnect_resumes_by_cursor_without_duplicates(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        room = await _bob_writes(a, b, "before")
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        await page.locator(".conversation").click()
        await expect(page.locator(".message.theirs")).to_have_count(1)
        await expect(page.locator("#connection")).to_have_text("online")
        for session in list(a.api.service.sessions):  # the node drops the browser's socket
            await session.ws.close(code=1001, message=b"test")
        await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "during"})
        await expect(page.locator("#connection")).to_have_text("online")  # reconnected
        await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "after"})
        theirs = page.locator(".message.theirs .text")
        await expect(theirs).to_have_text(["before", "during", "after"])
        await context.close()
        assert tab.errors == []


async def test_a_revoked_browser_is_shown_the_pairing_screen(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a:
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        (paired,) = (await a.client.call("GET", "/v1/clients"))["clients"]
        await a.client.call("DELETE", f"/v1/clients/{paired['client_id']}")
        # revoking ends the page's socket; the page learns why and asks to pair again
        await expect(tab.page.get_by_role("heading", name="Pair this browser")).to_be_visible()
        await expect(tab.page.get_by_role("alert")).to_have_text(
            "This browser is no longer paired."
        )
        await context.close()


async def test_scroll_back_through_history_by_keyboard(tmp_path: Path, browser: Browser) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await _bob_writes(a, b, *(f"m{i}" for i in range(60)))
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        await page.locator(".conversation").focus()
        await page.keyboard.press("Enter")  # rows are buttons: keyboard opens them
        theirs = page.locator(".message.theirs")
        await expect(theirs).to_have_count(50)  # the newest page
        await expect(theirs.last).to_have_text(re.compile("^m59"))
        await page.get_by_role("button", name="Load older messages").focus()
        await page.keyboard.press("Enter")
        await expect(theirs).to_have_count(60)
        await expect(theirs.first).to_have_text(re.compile("^m0"))
        await expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()
        await page.get_by_role("textbox", name="Message").focus()
        await page.keyboard.press("Escape")  # back to the list
        await expect(page.locator(".conversation")).to_be_focused()
        await context.close()
        assert tab.errors == []


async def test_pair_and_chat_over_tls(tmp_path: Path, browser: Browser) -> None:
    cert = ensure_certificate(tmp_path)
    tls = {"tls_cert_file": cert, "tls_key_file": tmp_path / KEY_FILE}
    async with asyncio.timeout(15), home(tmp_path / "a", api=tls) as a:
        offer = await a.client.call("POST", "/v1/clients/pair")
        assert offer["url"].startswith("https://") and "&fp=" in offer["url"]
        context, tab = await open_tab(browser, offer["url"], phone=True, self_signed=True)
        await expect(tab.page.get_by_role("heading", name="Chats")).to_be_visible()
        await expect(tab.page.locator("#connection")).to_have_text("online")  # wss
        (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE_NAME]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        await context.close()
        assert tab.errors == []


async def test_a_click_on_a_row_lands_while_the_list_redraws_another(
    tmp_path: Path, browser: Browser
) -> None:
    """Every list update drew every row again (a message, a presence, a `read` frame), and a
    press and release on a row replaced in between made no click; a row an update leaves as
    it was now stays the element it was."""
    async with asyncio.timeout(20), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await _bob_writes(a, b, "hi")
        alice = (await a.status())["user_id"]
        group = await b.client.call("POST", "/v1/groups", {"name": "hearth", "members": [alice]})
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        direct = page.locator(".conversation", has_text="hi")
        others = page.locator(".conversation", has_text="hearth")
        await expect(others).to_be_visible()
        await direct.hover()
        await page.mouse.down()
        await b.client.call("POST", f"/v1/conversation/{group['id']}/messages", {"message": "news"})
        await expect(others.locator(".preview")).to_have_text("news")  # the list was redrawn
        await page.mouse.up()
        await expect(page.locator(".message.theirs")).to_contain_text(["hi"])  # its chat opened
        await context.close()
        assert tab.errors == []
