"""WebSocket frame fuzzing on a real node (SPEC §15.4.2, §15.6): Hypothesis mutates valid
client frames (a field replaced by any JSON value or a lone surrogate, dropped or added; the
text cut or a character swapped; random text or bytes) and sends them among valid sends.
Every valid send is stored exactly once and confirmed, the sending connection and another
client stay connected, and every mutated frame is either served or refused with an error frame.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.identity import UserId, user_id_text
from tests.integration.api_helpers import Socket, home, open_conversation

OTHER = user_id_text(UserId(bytes(range(32))))
ELSEWHERE = "ef" * 32
"""A room id that is not ours: templates other than `send` must not touch our room."""
PLACEHOLDER_ROOM = "00" * 32
"""Replaced by our room in `send` templates."""

_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "x\udfffy", "text", "read", "", "image/png\r\nX: 1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
_TEMPLATES: list[dict[str, Any]] = [
    {"event": "send", "room_id": PLACEHOLDER_ROOM, "message": "m", "client_id": "m"},
    {
        "event": "send",
        "room_id": PLACEHOLDER_ROOM,
        "message": "",
        "client_id": "m",
        "type": "image",
        "media": {"digest": "cd" * 32, "content_type": "image/png", "size": 3},
    },
    {"event": "ack", "message_id": "ab" * 32, "status": "read"},
    {"event": "typing", "room_id": PLACEHOLDER_ROOM, "active": True},
    {"event": "create_conversation", "recipient_id": OTHER, "request_id": "r"},
    {"event": "join_group", "room_id": ELSEWHERE, "request_id": "r"},
    {"event": "leave_group", "room_id": ELSEWHERE, "request_id": "r"},
    {"event": "get_all_group", "request_id": "r"},
]


@st.composite
def _mutated(draw: st.DrawFn) -> str | bytes:
    """One frame derived from a valid one, or noise."""
    frame = dict(draw(st.sampled_from(_TEMPLATES)))
    kind = draw(st.sampled_from(["replace", "drop", "add", "nested", "text", "noise", "bytes"]))
    names = sorted(frame)
    if kind == "replace":
        frame[draw(st.sampled_from(names))] = draw(_JSON)
    elif kind == "drop":
        frame.pop(draw(st.sampled_from(names)))
    elif kind == "add":
        frame[draw(st.text(max_size=6))] = draw(_JSON)
    elif kind == "nested" and isinstance(frame.get("media"), dict):
        frame["media"] = {
            **frame["media"],
            draw(st.sampled_from(["size", "digest", "content_type"])): draw(_JSON),
        }
    elif kind == "noise":
        return draw(st.text(max_size=64))
    elif kind == "bytes":
        return draw(st.binary(max_size=64))
    text = json.dumps(frame, ensure_ascii=draw(st.booleans()))
    if not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text):
        text = json.dumps(frame)  # a lone surrogate travels escaped: UTF-8 cannot carry it
    if kind == "text" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.text(max_size=2)) + text[at + draw(st.integers(0, 3)) :]
    return text


async def _scenario(frames: list[str | bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="ws-fuzz-") as tmp:
        async with asyncio.timeout(20), home(Path(tmp) / "a") as h:
            room = await open_conversation(h, OTHER)
            valid = [f"valid-{i}" for i in range(len(frames))]
            async with h.socket() as sender, h.socket() as watcher:
                for frame, client_id in zip(frames, valid, strict=True):
                    if isinstance(frame, str):
                        await sender.send_raw(frame.replace(PLACEHOLDER_ROOM, room))
                    else:
                        await sender.ws.send_bytes(frame)
                    await sender.send(
                        event="send", room_id=room, message=client_id, client_id=client_id
                    )
                confirmed = await _confirmations(sender, set(valid))
                assert sorted(confirmed) == sorted(valid), "a valid send confirmed twice or never"
                await sender.send(event="send", room_id=room, message="last", client_id="last")
                await watcher.next("message", lambda f: f["message"] == "last")
            details = await h.client.call("GET", f"/v1/conversation/{room}/details?limit=100")
            stored = [m.get("message") for m in details["messages"]]
            for client_id in valid:
                assert stored.count(client_id) == 1, (client_id, stored)


async def _confirmations(ws: Socket, wanted: set[str]) -> list[str]:
    """client_ids of our valid sends' `message_sent`, until each came (duplicates kept)."""
    confirmed: list[str] = []
    while not wanted <= set(confirmed):
        message = await ws.ws.receive()
        assert message.type is aiohttp.WSMsgType.TEXT, f"connection ended: {message}"
        frame = message.json()
        if frame["event"] == "message_sent" and frame["client_id"] in wanted:
            confirmed.append(frame["client_id"])
        elif frame["event"] == "error":
            assert frame.get("client_id") not in wanted, frame
    return confirmed


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames=st.lists(_mutated(), min_size=10, max_size=40))
def test_mutated_frames_among_valid_sends_lose_and_double_nothing(
    frames: list[str | bytes],
) -> None:
    asyncio.run(_scenario(frames))
