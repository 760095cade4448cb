"""The WebSocket's input rules on a real node (SPEC §15.4.2, §15.6): one client's frame is
answered by an error frame to that client, and affects neither its in-flight sends nor any
other client (issue #12, finding 8)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from hearthmesh.protocol.client_api import MAX_FRAME_BYTES
from hearthmesh.protocol.identity import UserId, user_id_text
from tests.integration.api_helpers import Home, Socket, home, open_conversation

OTHER = user_id_text(UserId(bytes(range(32))))


def _bad_frames(room: str) -> list[str]:
    """The frames that closed their connection with a traceback, and the lone surrogates in
    client_id / request_id whose echo closed every client's connection."""
    return [
        '{"event":"send","room_id":"' + room + '","message":"","type":{},"client_id":"b1"}',
        '{"event":"ack","message_id":"' + room + '","status":[]}',
        '{"event":"send","room_id":"' + room + '","message":"\\ud800","client_id":"b2"}',
        '{"event":"send","room_id":"' + room + '","message":"m","client_id":"\\ud800"}',
        '{"event":"get_all_group","request_id":"\\udfff"}',
        '{"event":"join_group","room_id":"' + room + '","request_id":"\\ud800"}',
    ]


async def _sent_and_errors(ws: Socket, sends: int, errors: int) -> dict[str, str]:
    """Read until `sends` message_sent and `errors` error frames came; client_id -> outcome."""
    outcomes: dict[str, str] = {}
    got_errors = 0
    while len(outcomes) < sends or got_errors < errors:
        message = await ws.ws.receive()
        assert message.type is aiohttp.WSMsgType.TEXT, f"connection ended: {message}"
        frame = message.json()
        if frame["event"] == "message_sent":
            outcomes[frame["client_id"]] = "sent"
        elif frame["event"] == "error":
            got_errors += 1
            assert frame["error"]["code"] == 2, frame
    return outcomes


async def _messages(h: Home, room: str) -> list[str]:
    details = await h.client.call("GET", f"/v1/conversation/{room}/details?limit=100")
    return [m["message"] for m in details["messages"]]


async def test_bad_frames_leave_in_flight_sends_and_other_clients_alone(tmp_path: Path) -> None:
    async with asyncio.timeout(10), home(tmp_path / "a") as h:
        room = await open_conversation(h, OTHER)
        async with h.socket() as sender, h.socket() as watcher:
            bad = _bad_frames(room)
            for i in range(24):  # valid sends in flight while the bad frames arrive
                await sender.send(event="send", room_id=room, message=f"v{i}", client_id=f"v{i}")
                if i % 4 == 0:
                    await sender.send_raw(bad[i // 4])
            outcomes = await _sent_and_errors(sender, sends=24, errors=len(bad))
            assert outcomes == {f"v{i}": "sent" for i in range(24)}
            seen: set[str] = set()  # the other client saw every message, and is still connected
            while len(seen) < 24:
                seen.add((await watcher.next("message"))["message"])
            await sender.send(event="send", room_id=room, message="after", client_id="after")
            await watcher.next("message", lambda f: f["message"] == "after")
        assert sorted(await _messages(h, room)) == sorted([f"v{i}" for i in range(24)] + ["after"])


async def test_a_frame_over_the_librarys_limit_gets_an_error_frame(tmp_path: Path) -> None:
    """Frames over aiohttp's limit got a bare close 1009; now an error frame says why first."""
    async with (
        asyncio.timeout(10),
        home(tmp_path / "a") as h,
        h.socket() as big,
        h.socket() as other,
    ):
        await big.send_raw("x" * (4 * MAX_FRAME_BYTES + 1))
        error = await big.next("error")
        assert error["error"]["code"] == 5
        closing = await big.ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        room = await open_conversation(h, OTHER)
        await other.send(event="send", room_id=room, message="fine", client_id="c")
        assert (await other.next("message_sent"))["client_id"] == "c"


async def test_an_unencodable_frame_is_dropped_not_every_connection(tmp_path: Path) -> None:
    """Defence in depth: frames are written with ensure_ascii=False, so a lone surrogate that
    got past the decoders closed the connection of every client it was published to."""
    async with asyncio.timeout(10), home(tmp_path / "a") as h, h.socket() as a, h.socket() as b:
        for session in h.api.service.sessions:
            session.put('{"event":"bogus","text":"\ud800"}')
        room = await open_conversation(h, OTHER)
        await a.send(event="send", room_id=room, message="still here", client_id="c")
        assert (await a.next("message_sent"))["client_id"] == "c"
        assert (await b.next("message"))["message"] == "still here"
