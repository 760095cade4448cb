"""Real Chromium (Debian's, installed by `make browser`) driven by async Playwright.

Async Playwright runs inside our pytest-asyncio tests, so the two never fight over the event
loop (a sync Playwright would: browser-test-facts). Each test gets a fresh browser context;
every console error and page error is collected, and the tests assert there are none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
)

CHROMIUM = Path(os.environ.get("HEARTHMESH_CHROMIUM", "/usr/lib/chromium/chromium-headless-shell"))
"""Debian's Chromium headless shell (what Playwright itself runs headless): the same Blink and
V8 without the full browser's UI, so the browser tests' Chromium took ~9 s less CPU (18 tests:
13.3 and 13.6 s, against 21.7 and 23.9 s with the full browser, interleaved pairs)."""
FULL_CHROMIUM = Path(os.environ.get("HEARTHMESH_FULL_CHROMIUM", "/usr/lib/chromium/chromium"))
"""The full browser, for what the shell lacks: it shows no notifications (`full_browser`)."""
_INSTALLED: Final = {binary: binary.exists() for binary in (CHROMIUM, FULL_CHROMIUM)}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "web-screenshots"
"""Where the tests leave a screenshot of each screen (build/ is not committed)."""


@dataclass
class Tab:
    """A page and the errors it logged."""

    page: Page
    errors: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path))
        return path


@asynccontextmanager
async def chromium(binary: Path) -> AsyncIterator[Browser]:
    """A launched Chromium, closed on exit (bound to the event loop that launched it)."""
    if not _INSTALLED[binary]:
        pytest.fail(f"no Chromium at {binary}: run `make browser` (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(binary), args=["--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()


WEB_LOOP: Final = pytest.mark.asyncio(loop_scope="session")
"""Every browser test module's mark: its tests run on the session's event loop, which the one
`browser` lives on."""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for every browser test of a pytest process (an xdist worker): a launch
    costs ~1.3 s of CPU and 1-6 s of wall on a loaded machine (one per module before), and
    each test still opens its own contexts (cookies, storage), so only the process is
    shared."""
    async with chromium(CHROMIUM) as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="session")
async def full_browser() -> AsyncIterator[Browser]:
    """The full Chromium, for the one test of what the headless shell lacks (notifications);
    launched for that test alone, so the other workers never start it."""
    async with chromium(FULL_CHROMIUM) as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _contexts_closed(browser: Browser) -> AsyncIterator[None]:
    """Close what a test left open in the shared Chromium (a test that failed, or a context
    it never closed): its pages would go on running, reconnecting to nodes that are gone."""
    yield
    for context in browser.contexts:
        await context.close()


async def open_tab(
    browser: Browser, url: str, *, phone: bool = False, self_signed: bool = False
) -> tuple[BrowserContext, Tab]:
    """A new context (its own cookies) with one page at `url`, its errors collected;
    `self_signed`: accept the node's own certificate (a person confirms it once)."""
    viewport: ViewportSize = (
        {"width": 390, "height": 844} if phone else {"width": 1200, "height": 800}
    )
    context = await browser.new_context(
        viewport=viewport, is_mobile=phone, has_touch=phone, ignore_https_errors=self_signed
    )
    context.set_default_timeout(5_000)
    page = await context.new_page()
    tab = Tab(page)
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: tab.errors.append(str(e)))
    await page.goto(url)
    return context, tab
