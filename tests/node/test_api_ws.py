"""The WebSocket face of the client API on a real node: frames, errors, resume by cursor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from hearthmesh.protocol.client_api import MAX_FRAME_BYTES
from hearthmesh.protocol.identity import UserId, user_id_text
from tests.conftest import FakeClock
from tests.integration.api_helpers import TOKEN, Home, home

OTHER = user_id_text(UserId(bytes(range(32))))


async def _room(h: Home) -> str:
    room: str = (await h.client.call("POST", "/v1/conversation", {"recipient_id": OTHER}))[
        "room_id"
    ]
    return room


async def test_reconnect_with_cursor_gets_everything_missed_exactly_once(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await _room(h)
        async with h.socket() as watcher:
            await h.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "a"})
            seen = await watcher.next("message")
            cursor = seen["cursor"]
        for text in ("b", "c", "d"):  # while no client is connected
            await h.client.call("POST", f"/v1/conversation/{room}/messages", {"message": text})
        async with h.socket(cursor) as again:
            assert again.ready["resumed"] is True
            got = [(await again.next("message"))["message"] for _ in range(3)]
            assert got == ["b", "c", "d"]
            await h.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "e"})
            live = await again.next("message")
            assert live["message"] == "e"
            assert [f["message"] for f in again.seen if f["event"] == "message"] == [
                "b",
                "c",
                "d",
                "e",
            ]


async def test_unknown_cursor_asks_the_client_to_resync(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h, h.socket("deadbeef.7") as ws:
        assert ws.ready["resumed"] is False
        await ws.next("resync")


async def test_bad_frames_get_error_codes_and_later_messages_still_arrive(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await _room(h)
        async with h.socket() as ws:
            bad: list[tuple[str, int]] = [
                ("not json", 2),
                ("[1, 2]", 2),
                (json.dumps({"event": "fly"}), 2),
                (
                    json.dumps(
                        {"event": "send", "room_id": "xyz", "message": "m", "client_id": "1"}
                    ),
                    8,
                ),
                (json.dumps({"event": "send", "room_id": room, "message": 5, "client_id": "2"}), 2),
                (json.dumps({"event": "send", "room_id": room, "message": "m"}), 2),
                (
                    json.dumps(
                        {"event": "send", "room_id": "ab" * 32, "message": "m", "client_id": "3"}
                    ),
                    14,
                ),
                (json.dumps({"event": "create_conversation", "recipient_id": "u0"}), 8),
                (json.dumps({"event": "ack", "message_id": "ab" * 32, "status": "read"}), 14),
                (json.dumps({"event": "ack", "message_id": "ab" * 32, "status": "seen"}), 2),
                (json.dumps({"event": "typing", "room_id": room, "active": "yes"}), 2),
                (json.dumps({"event": "join_group", "room_id": "ab" * 32}), 14),
                ("x" * (MAX_FRAME_BYTES + 1), 5),
            ]
            for frame, code in bad:
                await ws.send_raw(frame)
                error = await ws.next("error")
                assert error["error"]["code"] == code, (frame[:80], error)
            errors = [f for f in ws.seen if f["event"] == "error"]
            assert [e.get("client_id") for e in errors[3:7]] == ["1", "2", None, "3"]
            await ws.send(event="send", room_id=room, message="still fine", client_id="ok")
            sent = await ws.next("message_sent")
            assert sent["client_id"] == "ok"
        details = await h.client.call("GET", f"/v1/conversation/{room}/details")
        assert [m["message"] for m in details["messages"]] == ["still fine"]


async def test_frames_beyond_the_rate_are_refused_not_lost(
    tmp_path: Path, clock: FakeClock
) -> None:
    options = {"ws_rate_per_s": 1.0, "ws_burst": 3}  # the API's clock stands still: no refill
    async with asyncio.timeout(10), home(tmp_path / "a", api=options, api_clock=clock) as h:
        room = await _room(h)
        async with h.socket() as ws:
            for i in range(5):
                await ws.send(event="send", room_id=room, message=str(i), client_id=str(i))
            outcomes: dict[str, str] = {}
            while len(outcomes) < 5:
                message = await ws.ws.receive()
                frame = json.loads(message.data)
                if frame["event"] in ("message_sent", "error"):
                    outcomes[frame["client_id"]] = frame["event"]
                    if frame["event"] == "error":
                        assert frame["error"]["code"] == 12
            assert list(outcomes.values()).count("message_sent") == 3
        details = await h.client.call("GET", f"/v1/conversation/{room}/details")
        accepted = {k for k, v in outcomes.items() if v == "message_sent"}
        assert {m["message"] for m in details["messages"]} == accepted


async def test_a_users_other_clients_see_its_sent_messages(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await _room(h)
        async with h.socket() as phone, h.socket() as laptop:
            await phone.send(event="send", room_id=room, message="from phone", client_id="p1")
            sent = await phone.next("message_sent")
            echoed = await laptop.next("message")
            assert (echoed["message_id"], echoed["client_id"]) == (sent["message_id"], "p1")
            status = await h.status()
            assert status["clients"] == 2


async def test_websocket_token_in_query_for_browsers(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(10),
        home(tmp_path / "a") as h,
        aiohttp.ClientSession() as http,
        http.ws_connect(h.url + "/v1/ws", params={"access_token": h.client.token}) as ws,
    ):
        ready = json.loads((await ws.receive()).data)
        assert ready["event"] == "ready"


async def test_sends_of_one_socket_are_sealed_in_the_order_sent(tmp_path: Path) -> None:
    """SPEC §15.4: the first send awaits a store read the others do not (its media's seal),
    yet every send of the socket takes its sequence number and HLC in frame order."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await _room(h)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            http.post(
                h.url + "/v1/media", data=b"\x89PNG...", headers={"Content-Type": "image/png"}
            ) as response,
        ):
            media = await response.json()
        async with h.socket() as ws:
            await ws.send(
                event="send", room_id=room, message="0", client_id="0", type="image", media=media
            )
            for i in range(1, 5):
                await ws.send(event="send", room_id=room, message=str(i), client_id=str(i))
            sent: dict[str, list[int]] = {}
            while len(sent) < 5:
                frame = await ws.next("message_sent")
                sent[frame["client_id"]] = frame["hlc"]
        details = await h.client.call("GET", f"/v1/conversation/{room}/details")
        assert [m["message"] for m in details["messages"]] == ["0", "1", "2", "3", "4"]
        stamps = [sent[str(i)] for i in range(5)]
        assert stamps == sorted(stamps), stamps
