"""The verification screen and trust states of the web client (SPEC §15.7.10, §29), in real
Chromium against two real home nodes: Alice on a desktop browser, Bob on a phone-sized one.

They compare the seven emoji and the decimals each browser shows, refuse once and confirm once
(each starting one flow), see the verified badge, and then Alice sees the warning when Bob links
a new device. Each step asserts what a person sees, what the nodes hold, and that neither page
logged an error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from hearthmesh.node.node import Node
from hearthmesh.protocol.errors import ErrorCode
from tests.integration.api_helpers import befriend, home, link, open_conversation
from tests.integration.conftest import wait_until
from tests.integration.test_devices import link_device

from .conftest import WEB_LOOP, open_tab
from .test_web_client import _pair

pytestmark = WEB_LOOP

_ACROSS_NODES_MS = 20_000
"""What one node's change may take to show in the other's browser on a loaded machine."""


async def _shown_sas(page: Page) -> tuple[list[str], str]:
    """The emoji names and the decimals the page's verification dialog shows."""
    dialog = page.locator("#verification")
    await expect(dialog.locator(".sas .emoji")).to_have_count(7, timeout=_ACROSS_NODES_MS)
    names = await dialog.locator(".emoji-name").all_text_contents()
    return names, await dialog.locator("#sas-decimals").inner_text()


async def test_verify_by_emoji_both_ways_see_the_badge_then_a_new_device_warns(
    tmp_path: Path, browser: Browser
) -> None:
    async with asyncio.timeout(90), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(b, a)
        bob, alice = await befriend(b, a)
        room = await open_conversation(b, alice)
        await b.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hi"})
        a_context, a_tab = await open_tab(browser, a.url)
        b_context, b_tab = await open_tab(browser, b.url, phone=True)
        await _pair(a, a_tab)
        await _pair(b, b_tab)
        alice_page, bob_page = a_tab.page, b_tab.page
        await alice_page.get_by_role("button", name="Friends").click()
        await bob_page.get_by_role("button", name="Friends").click()

        # 1. Alice starts; Bob's browser shows the request by itself; Bob says they differ.
        await alice_page.locator("#friend-list").get_by_role("button", name="Verify").click()
        await expect(bob_page.locator("#verification h2")).to_have_text(
            f"{alice[:12]} asks to verify", timeout=_ACROSS_NODES_MS
        )
        alice_sas, bob_sas = await _shown_sas(alice_page), await _shown_sas(bob_page)
        assert alice_sas == bob_sas and len(alice_sas[1].split()) == 3
        await bob_page.get_by_role("button", name="They don't match").click()
        cancelled = f"code {int(ErrorCode.VERIFICATION_CANCELLED)}"
        for page in (alice_page, bob_page):
            failed = page.locator("#verification .outcome.failed")
            await expect(failed).to_contain_text(cancelled, timeout=_ACROSS_NODES_MS)
        await b_tab.screenshot("verification-failed-phone")
        for page in (alice_page, bob_page):
            await page.get_by_role("button", name="Close").click()
            await expect(page.locator("#verification")).to_be_hidden()
        trust = await a.client.call("GET", f"/v1/users/{bob}/trust")
        assert [d["verified"] for d in trust["devices"]] == [False]  # a refusal trusts nothing
        await expect(alice_page.locator("#friend-list .trust")).to_have_count(0)

        # 2. Bob starts the other way; both confirm (Alice by keyboard): both are verified.
        await bob_page.locator("#friend-list").get_by_role("button", name="Verify").click()
        await expect(alice_page.locator("#verification h2")).to_have_text(
            f"{bob[:12]} asks to verify", timeout=_ACROSS_NODES_MS
        )
        alice_sas, bob_sas = await _shown_sas(alice_page), await _shown_sas(bob_page)
        assert alice_sas == bob_sas
        await a_tab.screenshot("verification")
        await b_tab.screenshot("verification-phone")
        await expect(alice_page.get_by_role("button", name="They match")).to_be_focused()
        await alice_page.keyboard.press("Enter")
        await bob_page.get_by_role("button", name="They match").click()
        for page in (alice_page, bob_page):
            outcome = page.locator("#verification .outcome.verified")
            await expect(outcome).to_be_visible(timeout=_ACROSS_NODES_MS)
        await a_tab.screenshot("verification-done")
        await alice_page.keyboard.press("Escape")  # a finished flow: Escape closes it
        await expect(alice_page.locator("#verification")).to_be_hidden()
        await bob_page.get_by_role("button", name="Close").click()
        for h, other in ((a, bob), (b, alice)):
            trust = await h.client.call("GET", f"/v1/users/{other}/trust")
            assert [d["verified"] for d in trust["devices"]] == [True]
        for page in (alice_page, bob_page):
            badge = page.locator("#friend-list .trust.verified")
            await expect(badge).to_be_visible(timeout=_ACROSS_NODES_MS)
        await alice_page.get_by_role("button", name="Friends").click()  # the panel closes
        chat_row = alice_page.locator(f'#conversations .conversation[data-room="{room}"]')
        await expect(chat_row.locator(".trust.verified")).to_be_visible(timeout=_ACROSS_NODES_MS)
        await chat_row.click()
        await expect(alice_page.locator("#chat-trust .trust.verified")).to_be_visible(
            timeout=_ACROSS_NODES_MS
        )
        await expect(alice_page.locator("#trust-notice")).to_be_hidden()
        await a_tab.screenshot("chat-verified")

        # 3. Bob links a new device: Alice's chat and list warn that his keys changed.
        config, _ = await link_device(b.node, tmp_path / "bob-laptop")
        async with Node(config) as laptop:
            await laptop.connect(b.node.listen_addrs[0])
            warning = alice_page.locator("#trust-notice .trust-warning")
            await expect(warning).to_be_visible(timeout=_ACROSS_NODES_MS)
            await expect(warning).to_contain_text("device keys changed")
            await expect(chat_row.locator(".trust.changed")).to_be_visible(timeout=_ACROSS_NODES_MS)
            await expect(alice_page.locator("#chat-trust .trust.changed")).to_be_visible(
                timeout=_ACROSS_NODES_MS
            )
            trust = await a.client.call("GET", f"/v1/users/{bob}/trust")
            assert trust["keys_changed"] is True and len(trust["devices"]) == 2
            await a_tab.screenshot("chat-keys-changed")
            await expect(
                warning.get_by_role("button", name=f"Verify again {bob[:12]}")
            ).to_be_visible()
        await a_context.close()
        await b_context.close()
        assert a_tab.errors == [], a_tab.errors
        assert b_tab.errors == [], b_tab.errors


async def test_our_own_new_device_is_verified_from_settings(
    tmp_path: Path, browser: Browser
) -> None:
    """SPEC §15.7.10: a device of our own user is verified from its row in settings (the flow
    runs with the node its record places it on); the other side is the laptop node itself."""
    async with asyncio.timeout(60), home(tmp_path / "a") as a:
        config, _ = await link_device(a.node, tmp_path / "laptop")
        async with Node(config) as laptop:
            await laptop.connect(a.node.listen_addrs[0])
            context, tab = await open_tab(browser, a.url, phone=True)
            await _pair(a, tab)
            page = tab.page
            await page.get_by_role("button", name="Settings").click()
            laptop_id = next(
                d["device_id"]
                for d in (await a.client.call("GET", "/v1/devices"))["devices"]
                if not d["this_device"]
            )
            await page.get_by_role("button", name=f"Verify device {laptop_id[:16]}").click()
            await wait_until(lambda: bool(laptop.verification.flows()))
            flow = laptop.verification.flows()[0]
            await wait_until(lambda: flow.machine.shown is not None)
            assert flow.machine.shown is not None
            names, decimals = await _shown_sas(page)
            assert names == list(flow.machine.shown.emoji_names)
            assert decimals.split() == [str(n) for n in flow.machine.shown.decimals]
            await page.get_by_role("button", name="They match").click()
            await laptop.verification.confirm(flow.machine.flow)
            outcome = page.locator("#verification .outcome.verified")
            await expect(outcome).to_be_visible(timeout=_ACROSS_NODES_MS)
            await page.get_by_role("button", name="Close").click()
            row = page.locator("#devices .person").filter(has_text=laptop_id[:16])
            await expect(row.locator(".trust.verified")).to_be_visible(timeout=_ACROSS_NODES_MS)
            await tab.screenshot("settings-device-verified-phone")
        await context.close()
        assert tab.errors == [], tab.errors


async def test_a_strangers_request_does_not_take_over_the_screen(
    tmp_path: Path, browser: Browser
) -> None:
    """SPEC §15.7.10: only our own user's, a friend's or an accepted chat's request opens the
    dialog by itself; a stranger's is named on the status line, and nothing is trusted."""
    async with asyncio.timeout(60), home(tmp_path / "a") as a, home(tmp_path / "m") as m:
        await link(m, a)
        alice = (await a.status())["user_id"]
        mallory = (await m.status())["user_id"]
        context, tab = await open_tab(browser, a.url)
        await _pair(a, tab)
        page = tab.page
        await m.client.call("POST", "/v1/verifications", {"user_id": alice})
        await expect(page.locator("#status")).to_have_text(
            f"{mallory[:12]} asked to verify this device; only friends' and accepted chats'"
            " requests are shown.",
            timeout=_ACROSS_NODES_MS,
        )
        await expect(page.locator("#verification")).to_be_hidden()
        trust = await a.client.call("GET", f"/v1/users/{mallory}/trust")
        assert [d["verified"] for d in trust["devices"]] == [False]
        await context.close()
        assert tab.errors == [], tab.errors
