"""The client API's HTTP input rules on a real node (SPEC §15.6): what the fuzzers of issue #12
(finding 8) found, each refused with a 4xx and a code, changing nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hearthmesh.protocol.identity import UserId, user_id_text
from tests.integration.api_helpers import TOKEN, Home, home, open_conversation

OTHER = user_id_text(UserId(bytes(range(32))))
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _request(
    h: Home, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any, Mapping[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, h.url + path, headers=headers or AUTH, **kw) as response,
    ):
        return response.status, await response.json(content_type=None), response.headers


async def _raw_http(h: Home, head: bytes) -> tuple[int, bytes]:
    """Send request bytes as they are (headers no client library would write)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", h.api.port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[-1]


async def test_a_bearer_header_that_is_not_ascii_is_401(tmp_path: Path) -> None:
    """`Bearer \\xff\\xfe` was a 500 (and a traceback) before any token check."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        status, body = await _raw_http(
            h,
            b"GET /v1/node/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
        )
        assert status == 401 and json.loads(body)["error"]["code"] == 10


async def test_a_nul_in_a_header_is_a_clean_400_and_one_quiet_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        with caplog.at_level(logging.DEBUG):
            status, _ = await _raw_http(
                h,
                b"GET /v1/node/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"X-Note: a\x00b\r\nConnection: close\r\n\r\n",
            )
        assert status == 400
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        lines = [r for r in caplog.records if "cannot parse" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno <= logging.INFO
        assert (await h.status())["user_id"]


async def test_numbers_are_ascii_digits_within_bounds(tmp_path: Path) -> None:
    """`page_size=²` / `limit=¹` and 5,000 digits were 500s; Arabic-Indic 5 was read as 5."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await open_conversation(h, OTHER)
        for query in ("page_size=²", "page_size=\u0665", "page_size=" + "9" * 5000):
            status, body, _ = await _request(h, "GET", "/v1/conversation?" + query)
            assert (status, body["error"]["code"]) == (400, 2), query
        status, body, _ = await _request(h, "GET", f"/v1/conversation/{room}/details?limit=¹")
        assert (status, body["error"]["code"]) == (400, 2)
        status, body, _ = await _request(h, "GET", "/v1/conversation?page_size=5")
        assert status == 200 and body["page_size"] == 5


async def test_lone_surrogates_and_mistyped_fields_are_400_and_change_nothing(
    tmp_path: Path,
) -> None:
    """A lone surrogate in a profile, note, group name, message or peer address, and
    `type: {}` in a send, were 500s."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await open_conversation(h, OTHER)
        profile_before = await h.client.call("GET", "/v1/profile")
        lone = '"\\ud800"'
        cases = [
            ("PUT", "/v1/profile", '{"display_name": ' + lone + "}"),
            ("PUT", "/v1/profile", '{"bio": "ok\\udfffok"}'),
            ("POST", "/v1/friends/requests", f'{{"user_id": "{OTHER}", "note": {lone}}}'),
            ("POST", "/v1/groups", '{"name": ' + lone + "}"),
            ("POST", f"/v1/conversation/{room}/messages", '{"message": ' + lone + "}"),
            ("POST", f"/v1/conversation/{room}/messages", '{"message": "m", "type": {}}'),
            ("POST", f"/v1/conversation/{room}/messages", '{"message": "m", "client_id": []}'),
            ("POST", "/v1/peers", '{"address": "/ip4/127.0.0.1/p2p/\\ud800"}'),
            ("POST", "/v1/push/subscriptions", '{"endpoint": "http://x/\\ud800"}'),
        ]
        for method, path, data in cases:
            status, body, _ = await _request(h, method, path, data=data.encode())
            assert (status, body["error"]["code"]) == (400, 2), (method, path, data, body)
        assert await h.client.call("GET", "/v1/profile") == profile_before
        assert (await h.client.call("GET", f"/v1/conversation/{room}/details"))["messages"] == []
        assert (await h.client.call("GET", "/v1/groups"))["groups"] == []
        requests = await h.client.call("GET", "/v1/friends/requests?direction=outgoing")
        assert requests["requests"] == []


async def test_media_types_with_cr_lf_never_enter(tmp_path: Path) -> None:
    """A declared content type with CR/LF was stored, then broke the download."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await open_conversation(h, OTHER)
        status, body, _ = await _request(
            h, "POST", "/v1/media", data=b"png bytes", headers={**AUTH, "Content-Type": "png"}
        )
        assert (status, body["error"]["code"]) == (400, 2)
        status, body, _ = await _request(
            h,
            "POST",
            "/v1/media",
            data=b"png bytes",
            headers={**AUTH, "Content-Type": "image/png"},
        )
        assert status == 201
        media = {"digest": body["digest"], "content_type": "image/png\r\nX-Evil: 1", "size": 9}
        send = {"message": "", "type": "image", "media": media}
        status, body, _ = await _request(h, "POST", f"/v1/conversation/{room}/messages", json=send)
        assert (status, body["error"]["code"]) == (400, 2)
        assert (await h.client.call("GET", f"/v1/conversation/{room}/details"))["messages"] == []


async def test_tokenless_requests_cannot_spend_the_token_holders_rate(tmp_path: Path) -> None:
    """The limiter ran before the token check, per address: 600 tokenless requests locked the
    token holder (same address) out with 429."""
    options = {"http_rate_per_s": 1.0, "http_burst": 50}
    async with asyncio.timeout(10), home(tmp_path / "a", api=options) as h:
        refused = []
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.get(h.url + "/v1/node/status") as response:
                    refused.append(response.status)
        status, body, _ = await _request(h, "GET", "/v1/node/status")
        assert status == 200, body
        # the refused ones are limited on their own bucket
        assert set(refused) == {401, 429} and refused[0] == 401


async def test_push_subscription_cap_holds_under_concurrent_adds(tmp_path: Path) -> None:
    """`add_push` counted in one transaction and wrote in another: concurrent adds passed
    the cap together."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        hook = {"endpoint": "http://127.0.0.1:9/hook"}
        results = await asyncio.gather(
            *(_request(h, "POST", "/v1/push/subscriptions", json=hook) for _ in range(48))
        )
        statuses = sorted(status for status, _, _ in results)
        assert statuses.count(201) == 32 and statuses.count(409) == 16, statuses
        listed = await h.client.call("GET", "/v1/push/subscriptions")
        assert len(listed["subscriptions"]) == 32


async def test_a_required_body_is_required_and_405_names_what_is_allowed(tmp_path: Path) -> None:
    """`PUT /v1/profile` without its body answered 200; 405 came without `Allow`."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        status, body, _ = await _request(h, "PUT", "/v1/profile")
        assert (status, body["error"]["code"]) == (400, 2)
        status, body, headers = await _request(h, "PATCH", "/v1/conversation")
        assert status == 405 and set(headers["Allow"].split(",")) == {"GET", "POST", "DELETE"}
        status, body, headers = await _request(h, "DELETE", "/v1/devices/link")
        assert status == 405 and headers["Allow"] == "POST"
        status, body, headers = await _request(h, "GET", "/v1/ws")
        assert status == 426 and headers["Upgrade"] == "websocket"


async def test_a_body_that_is_no_object_and_a_group_of_65_are_refused_and_change_nothing(
    tmp_path: Path,
) -> None:
    """SPEC §15.6: a route's JSON body MUST be an object; a group is created with at most 64
    members named (each one membership commit: more are added later)."""
    members = [user_id_text(UserId(bytes([n]) * 32)) for n in range(1, 66)]
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        for body in ([], ["name"], "group", 7, None):
            status, answer, _ = await _request(h, "POST", "/v1/groups", json=body)
            assert (status, answer["error"]["code"]) == (400, 2), body
        status, answer, _ = await _request(
            h, "POST", "/v1/groups", json={"name": "g", "members": members}
        )
        assert (status, answer["error"]["code"]) == (400, 2)
        status, answer, _ = await _request(h, "GET", "/v1/groups")
        assert (status, answer["groups"]) == (200, [])
