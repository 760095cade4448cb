"""`hearthmesh bench web`: the web client in Chromium against two `hearthmesh run` nodes.

Alice's and Bob's browsers (Debian's Chromium, driven by Playwright: a dev dependency, and
`make browser`) are each paired with their own node; Alice and Bob are friends. Figures:

- first paint of the conversation list: from navigation to the first row shown (median of
  reloads);
- first paint of a conversation of `history` messages: from the click on its row to its newest
  page shown (median of openings);
- send to shown: Bob's page submits a message, Alice's page shows it; both stamps are read in
  the browsers (one wall clock on one machine), so Playwright's own round trips are not in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hearthmesh.tools.bench.stats import percentile
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = ["run"]

_CHROMIUM = os.environ.get("HEARTHMESH_CHROMIUM", "/usr/lib/chromium/chromium")
_WATCH_SHOWN = """() => {
  window.__shown = {};
  new MutationObserver(() => {
    for (const node of document.querySelectorAll(".message.theirs .text")) {
      if (!(node.textContent in window.__shown)) window.__shown[node.textContent] = Date.now();
    }
  }).observe(document.body, { childList: true, subtree: true });
}"""
_SUBMIT = """(text) => {
  document.getElementById("composer-text").value = text;
  const at = Date.now();
  document.getElementById("composer").requestSubmit();
  return at;
}"""


async def _pair(api: ApiClient, browser: Any) -> Any:
    offer = await api.call("POST", "/v1/clients/pair")
    # The page's CSP forbids eval; the harness's own waiting functions need it.
    context = await browser.new_context(viewport={"width": 1200, "height": 800}, bypass_csp=True)
    page = await context.new_page()
    await page.goto(offer["url"])
    await page.wait_for_selector("#connection[data-state=open]")
    return page


async def _write_history(api: ApiClient, room: str, count: int) -> None:
    """`count` messages pipelined on one WebSocket (HTTP would meet the request rate)."""
    async with api.websocket() as ws:
        for i in range(count):
            frame = {"event": "send", "room_id": room, "message": f"h{i}", "client_id": str(i)}
            await ws.send_json(frame)
        confirmed = 0
        while confirmed < count:
            frame = await ws.receive_json()
            confirmed += frame["event"] == "message_sent"


async def _holds(api: ApiClient, room: str, text: str) -> bool:
    """Is `text` the latest message of `room` on `api`'s node? Then the node holds all that
    came before it from that sender (released in sequence order, SPEC §8.2). The newest event
    of a room is often not a message (a receipt, a room key), so a page of one is no answer."""
    page = await api.call("GET", "/v1/conversation?page_size=100")
    rows = [row for row in page["conversations"] if row["id"] == room]
    latest = rows[0].get("LatestMessage") if rows else None
    return latest is not None and latest.get("message") == text


async def _bench(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-web-") as tmp:
        alice = await spawn_home(Path(tmp) / "a", name="alice")
        try:
            bob = await spawn_home(Path(tmp) / "b", name="bob")
            try:
                return await _between(alice, bob, quick)
            finally:
                await bob.terminate()
        finally:
            await alice.terminate()


async def _between(alice: HomeProcess, bob: HomeProcess, quick: bool) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    history, paints, samples = (200, 3, 10) if quick else (1000, 5, 50)
    async with (
        ApiClient(alice.api, alice.token) as alice_api,
        ApiClient(bob.api, bob.token) as bob_api,
        async_playwright() as playwright,
    ):
        await alice_api.call("POST", "/v1/peers", {"address": bob.addr})
        # friends: a stranger's burst of history would meet the limits for strangers
        await bob_api.call("POST", "/v1/friends/requests", {"user_id": alice.user_text})
        while True:  # the API has no event to wait on for this
            if (await alice_api.call("GET", "/v1/friends/requests"))["requests"]:
                break
            await asyncio.sleep(0.05)
        await alice_api.call("POST", f"/v1/friends/requests/{bob.user_text}/accept")
        room = (await bob_api.call("POST", "/v1/conversation", {"recipient_id": alice.user_text}))[
            "room_id"
        ]
        await _write_history(bob_api, room, history)
        while True:  # until alice's node holds the whole history (no event to wait on)
            if await _holds(alice_api, room, f"h{history - 1}"):
                break
            await asyncio.sleep(0.1)
        browser = await playwright.chromium.launch(
            executable_path=_CHROMIUM, args=["--disable-gpu"]
        )
        try:
            alice_page = await _pair(alice_api, browser)
            list_ms, chat_ms = [], []
            for _ in range(paints):
                started = time.perf_counter()
                await alice_page.reload()
                await alice_page.wait_for_selector(".conversation")
                list_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                await alice_page.click(".conversation")
                await alice_page.wait_for_selector(f".message.theirs >> text=h{history - 1}")
                chat_ms.append((time.perf_counter() - started) * 1000)
            bob_page = await _pair(bob_api, browser)
            await bob_page.click(".conversation")
            await bob_page.wait_for_selector("#composer-text")
            await alice_page.evaluate(_WATCH_SHOWN)
            latencies = []
            for i in range(samples):
                text = f"latency {i}"
                sent_at = await bob_page.evaluate(_SUBMIT, text)
                await alice_page.wait_for_function(f"window.__shown[{text!r}] !== undefined")
                shown_at = await alice_page.evaluate(f"window.__shown[{text!r}]")
                latencies.append(float(shown_at - sent_at))
        finally:
            await browser.close()
    return {
        "history_messages": history,
        "samples": samples,
        "list_first_paint_ms": round(statistics.median(list_ms), 1),
        "conversation_first_paint_ms": round(statistics.median(chat_ms), 1),
        "send_to_shown_p50_ms": round(percentile(latencies, 50), 1),
        "send_to_shown_p99_ms": round(percentile(latencies, 99), 1),
        "layout": "two `hearthmesh run` processes; Chromium (one browser, two contexts) and "
        "Playwright in the bench process",
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the web client benchmark (see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick))
