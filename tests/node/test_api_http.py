"""The client API's HTTP face on a real node: auth, Host/Origin, limits, the seed's endpoints."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hearthmesh.node.api.http_routes import ROUTES, documented_path
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.tools.client import ApiClient, ApiRefused
from tests.conftest import FakeClock
from tests.integration.api_helpers import TOKEN, Home, home, open_conversation

OTHER = user_id_text(UserId(bytes(range(32))))


async def _raw(
    h: Home, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, h.url + path, headers=headers or {}, **kw) as response,
    ):
        return response.status, await response.json(content_type=None)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_openapi_documents_every_route(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        document = await h.client.call("GET", "/openapi.json")
        assert document["openapi"].startswith("3.")
        for method, path, _ in ROUTES:
            documented = document["paths"][documented_path(path)]
            assert method.lower() in documented, f"{method} {path} undocumented"


async def test_every_request_needs_the_bearer_token(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        for _, path, _ in ROUTES:
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            status, body = await _raw(h, "GET", concrete)
            assert status == 401 and body["error"]["code"] == 10, path
        status, body = await _raw(
            h, "GET", "/v1/node/status", headers={"Authorization": "Bearer wrong"}
        )
        assert (status, body["error"]["message"]) == (401, "wrong bearer token")
        status, _ = await _raw(h, "GET", "/v1/ws", headers={"Authorization": "Bearer nope"})
        assert status == 401


async def test_host_must_be_loopback_and_origin_must_match(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        status, body = await _raw(
            h, "GET", "/v1/node/status", headers={**AUTH, "Host": "attacker.example:8470"}
        )
        assert (status, body["error"]["code"]) == (403, 10)
        status, _ = await _raw(
            h, "GET", "/v1/node/status", headers={**AUTH, "Origin": "http://evil.example"}
        )
        assert status == 403
        own_origin = h.url
        status, _ = await _raw(h, "GET", "/v1/node/status", headers={**AUTH, "Origin": own_origin})
        assert status == 200


async def test_node_status_names_peer_user_and_version(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        status = await h.status()
        assert status["peer_id"] == h.node.peer_id
        assert status["user_id"] == user_id_text(h.node.user_id)
        assert status["listen_addrs"] and status["version"]
        assert status["connected_peers"] == []
        # alone, AutoNAT has no one to ask: neither public nor private, no relays (SPEC §10.6)
        assert status["reachability"] == "unknown"
        assert status["relays"] == [] and status["peer_paths"] == {}
        assert status["hole_punches"] == {"tried": {}, "direct": {}}
        assert status["connections_closed"] == {}  # per reason, ours or the peer's (SPEC §10.13)
        assert status["home_lookups"] == 0  # DHT walks for others' records (SPEC §13.5)
        assert status["unreachable"] == {"users": [], "own_homes": []}
        assert status["undecryptable"] == 0  # nothing held for a key (SPEC §27.13.3)
        # alone, it wrote to no peer (per protocol, SPEC §15.5, §20.6)
        wire = status["wire"]
        assert {k: wire[k] for k in ("bytes", "writes", "opens", "gossip_rpcs_dropped")} == {
            "bytes": {},
            "writes": {},
            "opens": {},
            "gossip_rpcs_dropped": 0,
        }
        assert wire["gossip"]["ids_offered"] == wire["gossip"]["mesh_peers_seen"] == 0
        assert wire["gossip"]["topics"]["room"]["ihaves"] == 0  # by kind of topic (§20.6)
        assert wire["periodic"]["autonat_dial_back"] == {"runs": 0, "cpu_s": 0.0}  # none asked
        # a message for a user whose home no one can find: status names who we wait for
        room = await open_conversation(h, OTHER)
        await h.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hi"})
        while OTHER not in (await h.status())["unreachable"]["users"]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert (await h.status())["home_lookups"] >= 1  # it was looked up in the DHT


async def test_bad_requests_get_a_json_error_and_change_nothing(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        cases: list[tuple[str, str, dict[str, Any], int, int]] = [
            ("GET", "/v1/conversation?page_size=0", {}, 400, 2),
            ("GET", "/v1/conversation?page_size=abc", {}, 400, 2),
            ("GET", "/v1/conversation?uid=nonsense", {}, 400, 8),
            ("GET", f"/v1/conversation?uid={OTHER}", {}, 404, 14),
            ("DELETE", "/v1/conversation?id=zz", {}, 400, 8),
            ("DELETE", "/v1/conversation?id=" + "ab" * 32, {}, 404, 14),
            ("GET", "/v1/conversation/" + "ab" * 32 + "/details", {}, 404, 14),
            ("POST", "/v1/conversation", {"data": b"{not json"}, 400, 2),
            ("POST", "/v1/conversation", {"json": [1, 2]}, 400, 2),
            ("POST", "/v1/conversation", {"json": {"recipient_id": "u123"}}, 400, 8),
            ("POST", "/v1/groups", {"json": {"name": 5}}, 400, 2),
            ("POST", "/v1/push/subscriptions", {"json": {"endpoint": "ftp://x"}}, 400, 2),
            ("GET", "/v1/no/such/route", {}, 404, 14),
            ("PATCH", "/v1/conversation", {}, 405, 2),
            ("POST", "/v1/friends/requests/" + OTHER + "/accept", {}, 404, 14),
        ]
        for method, path, kw, status, code in cases:
            got_status, body = await _raw(h, method, path, headers=AUTH, **kw)
            assert (got_status, body["error"]["code"]) == (status, code), (method, path, body)
            assert body["error"]["message"]
        listing = await h.client.call("GET", "/v1/conversation")
        assert listing["conversations"] == []
        assert (await h.client.call("GET", "/v1/push/subscriptions"))["subscriptions"] == []


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    # A small media limit: a 17 MiB body over the default one took over the 10 s guard on a
    # loaded machine, and what is tested is the answer to a body over the limit, not its size.
    limits = {"max_json_bytes": 1024, "max_media_bytes": 64 * 1024}
    async with asyncio.timeout(10), home(tmp_path / "a", api=limits) as h:
        status, body = await _raw(
            h, "POST", "/v1/conversation", headers=AUTH, json={"recipient_id": "x" * 2000}
        )
        assert (status, body["error"]["code"]) == (413, 5)
        status, body = await _raw(h, "POST", "/v1/media", headers=AUTH, data=b"x" * (65 * 1024))
        assert (status, body["error"]["code"]) == (413, 5)
        created = await h.client.call("POST", "/v1/conversation", {"recipient_id": OTHER})
        assert len(created["room_id"]) == 64


async def test_rate_limit_answers_429_then_recovers(tmp_path: Path, clock: FakeClock) -> None:
    options = {"http_rate_per_s": 20.0, "http_burst": 5}
    async with asyncio.timeout(10), home(tmp_path / "a", api=options, api_clock=clock) as h:
        statuses = [(await _raw(h, "GET", "/v1/node/status", headers=AUTH))[0] for _ in range(5)]
        assert statuses == [200] * 5  # the burst, while the API's clock stands still
        status, body = await _raw(h, "GET", "/v1/node/status", headers=AUTH)
        assert (status, body["error"]["code"]) == (429, 12)
        clock.advance(25)  # 20 a second: half a token back, not enough
        assert (await _raw(h, "GET", "/v1/node/status", headers=AUTH))[0] == 429
        clock.advance(50)  # the bucket refills with time: that is what is tested
        assert (await _raw(h, "GET", "/v1/node/status", headers=AUTH))[0] == 200
        assert (await _raw(h, "GET", "/v1/node/status", headers=AUTH))[0] == 429


async def test_conversation_list_uses_the_seeds_paging_and_fields(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        await h.client.call("PUT", "/v1/profile", {"display_name": "Alice"})
        rooms = []
        for i in range(3):
            user = user_id_text(UserId(bytes([i + 1]) * 32))
            room = (await h.client.call("POST", "/v1/conversation", {"recipient_id": user}))[
                "room_id"
            ]
            await h.client.call("POST", f"/v1/conversation/{room}/messages", {"message": f"m{i}"})
            rooms.append(room)
        page = await h.client.call(
            "GET",
            "/v1/conversation",
            params={"uid": user_id_text(h.node.user_id), "page_size": "2", "page_number": "1"},
        )
        assert (page["page_size"], page["page_number"], page["has_more"]) == (2, 1, True)
        assert [c["id"] for c in page["conversations"]] == [rooms[2], rooms[1]]
        assert page["conversations"][0]["LatestMessage"]["message"] == "m2"
        page2 = await h.client.call(
            "GET", "/v1/conversation", params={"page_size": "2", "page_number": "2"}
        )
        assert [c["id"] for c in page2["conversations"]] == [rooms[0]]
        await h.client.call("DELETE", "/v1/conversation", params={"id": rooms[0]})
        page2 = await h.client.call(
            "GET", "/v1/conversation", params={"page_size": "2", "page_number": "2"}
        )
        assert page2["conversations"] == []


async def test_details_page_by_cursor_oldest_first_within_a_page(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = (await h.client.call("POST", "/v1/conversation", {"recipient_id": OTHER}))["room_id"]
        for i in range(5):
            await h.client.call("POST", f"/v1/conversation/{room}/messages", {"message": str(i)})
        first = await h.client.call(
            "GET", f"/v1/conversation/{room}/details", params={"limit": "3"}
        )
        assert [m["message"] for m in first["messages"]] == ["2", "3", "4"]
        second = await h.client.call(
            "GET",
            f"/v1/conversation/{room}/details",
            params={"limit": "3", "cursor": first["next_cursor"]},
        )
        assert [m["message"] for m in second["messages"]] == ["0", "1"]
        assert second["next_cursor"] is None


async def test_media_upload_download_and_group_listing(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.post(
                h.url + "/v1/media", data=b"\x89PNG...", headers={"Content-Type": "image/png"}
            ) as response:
                assert response.status == 201
                media = await response.json()
            async with http.get(h.url + f"/v1/media/{media['digest']}") as response:
                assert await response.read() == b"\x89PNG..."
        group = await h.client.call("POST", "/v1/groups", {"name": "solo", "members": []})
        groups = (await h.client.call("GET", "/v1/groups"))["groups"]
        assert [g["id"] for g in groups] == [group["id"]]
        sent = await h.client.call(
            "POST",
            f"/v1/conversation/{group['id']}/messages",
            {"message": "look", "type": "image", "media": media},
        )
        details = await h.client.call("GET", f"/v1/conversation/{group['id']}/details")
        assert details["messages"][-1]["media"]["digest"] == media["digest"]
        assert details["messages"][-1]["message_id"] == sent["message_id"]


async def test_api_client_raises_on_refusal(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        async with ApiClient(h.url, "wrong") as bad:
            with pytest.raises(ApiRefused) as refused:
                await bad.call("GET", "/v1/node/status")
        assert refused.value.status == 401
