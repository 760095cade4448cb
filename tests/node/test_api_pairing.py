"""Pairing a browser client and its session (SPEC §15.7): codes, cookie, CSRF, revoke."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from hearthmesh.node.api.errors import ApiError
from hearthmesh.node.api.paired_clients import COOKIE_NAME, CSRF_HEADER
from hearthmesh.node.api.pairing import PairingCodes
from tests.integration.api_helpers import Home, home


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def now_ms(self) -> int:
        return self.now


def test_a_code_works_once_and_not_after_it_expires() -> None:
    clock = _Clock()
    codes = PairingCodes(clock, ttl_s=60, rate_per_s=1000, burst=1000)
    code, expires_ms = codes.issue()
    assert expires_ms == clock.now + 60_000
    codes.redeem(code.lower()[:5] + "-" + code[5:])  # as a person types it
    with pytest.raises(ApiError):
        codes.redeem(code)  # used
    late, _ = codes.issue()
    clock.now += 60_000
    with pytest.raises(ApiError):
        codes.redeem(late)  # expired
    with pytest.raises(ApiError):
        codes.redeem("")


def _browser() -> aiohttp.ClientSession:
    # unsafe: keep cookies of an IP address (127.0.0.1), as browsers do
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _pair(h: Home, browser: aiohttp.ClientSession) -> dict[str, Any]:
    offer = await h.client.call("POST", "/v1/clients/pair")
    assert offer["url"].endswith(f"/#pair={offer['code']}")
    async with browser.post(h.url + "/v1/pair", json={"code": offer["code"]}) as response:
        assert response.status == 201, await response.text()
        cookie = response.cookies[COOKIE_NAME]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        session: dict[str, Any] = await response.json()
        return session


async def _status(browser: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> int:
    async with browser.request(method, url, **kw) as response:
        return response.status


async def test_a_paired_browser_uses_its_cookie_and_csrf_token(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as h, _browser() as browser:
        session = await _pair(h, browser)
        assert session["user_id"] == (await h.status())["user_id"]
        assert await _status(browser, "GET", h.url + "/v1/node/status") == 200
        async with browser.get(h.url + "/v1/session") as response:
            assert (await response.json())["csrf_token"] == session["csrf_token"]
        body = {"display_name": "Alice"}
        # Changing state needs the CSRF token besides the cookie.
        assert await _status(browser, "PUT", h.url + "/v1/profile", json=body) == 403
        headers = {CSRF_HEADER: session["csrf_token"]}
        assert (
            await _status(browser, "PUT", h.url + "/v1/profile", json=body, headers=headers) == 200
        )
        listed = (await h.client.call("GET", "/v1/clients"))["clients"]
        assert [c["client_id"] for c in listed] == [session["client_id"]]


async def test_a_tampered_cookie_and_a_revoked_client_are_shut_out(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as h, _browser() as browser:
        session = await _pair(h, browser)
        async with browser.ws_connect(h.url + "/v1/ws") as ws:
            assert (await ws.receive_json())["event"] == "ready"
            await h.client.call("DELETE", f"/v1/clients/{session['client_id']}")
            closing = await ws.receive()  # revoking ends the open WebSocket at once
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert await _status(browser, "GET", h.url + "/v1/node/status") == 401
        assert await h.client.call("GET", "/v1/clients") == {"clients": []}

        await _pair(h, browser)
        cookie = browser.cookie_jar.filter_cookies(URL(h.url))[COOKIE_NAME].value
        forged = cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB")
        async with (
            aiohttp.ClientSession() as other,
            other.get(
                h.url + "/v1/node/status", headers={"Cookie": f"{COOKIE_NAME}={forged}"}
            ) as r,
        ):
            assert r.status == 401


async def test_pairing_attempts_are_rate_limited_for_the_whole_node(tmp_path: Path) -> None:
    api = {"pairing_burst": 3, "pairing_rate_per_s": 0.001}
    async with asyncio.timeout(15), home(tmp_path / "a", api=api) as h, _browser() as browser:
        statuses = [
            await _status(browser, "POST", h.url + "/v1/pair", json={"code": "WRONGCODE0"})
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        offer = await h.client.call("POST", "/v1/clients/pair")
        status = await _status(browser, "POST", h.url + "/v1/pair", json={"code": offer["code"]})
        assert status == 429  # even the right code waits: guessing gains nothing


async def test_the_web_client_is_served_without_a_credential(tmp_path: Path) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as h, _browser() as browser:
        async with browser.get(h.url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert await _status(browser, "GET", h.url + "/web/app.js") == 200
        assert await _status(browser, "GET", h.url + "/web/nope.js") == 404
        # a path out of the web folder serves nothing (aiohttp normalises it to /api-token)
        assert await _status(browser, "GET", h.url + "/web/../api-token") == 401


async def test_a_cookie_or_csrf_header_that_is_not_ascii_is_refused_not_an_error(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(15), home(tmp_path / "a") as h, _browser() as browser:
        session = await _pair(h, browser)
        cookie = f"{COOKIE_NAME}={session['client_id']}.\u00e9\u00ff"
        async with (
            aiohttp.ClientSession() as other,
            other.get(h.url + "/v1/node/status", headers={"Cookie": cookie}) as r,
        ):
            assert r.status == 401
        headers = {CSRF_HEADER: "\u00e9" * 64}
        body = {"display_name": "x"}
        assert (
            await _status(browser, "PUT", h.url + "/v1/profile", json=body, headers=headers) == 403
        )
