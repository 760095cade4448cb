"""Client frames are parsed at the edge into typed commands or refused with a code (SPEC §15.4)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.client_api import (
    MAX_FRAME_BYTES,
    Ack,
    Send,
    decode_client_frame,
)
from hearthmesh.protocol.content import (
    ContactAction,
    ContactEvent,
    decode_contact,
    decode_typing,
    encode_contact,
    encode_typing,
)
from hearthmesh.protocol.errors import (
    InvalidIdentifier,
    MalformedMessage,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.receipts import ReceiptStatus

ROOM = "ab" * 32


def test_send_and_ack_frames_parse() -> None:
    command = decode_client_frame(
        json.dumps({"event": "send", "room_id": ROOM, "message": "hi", "client_id": "c"})
    )
    assert isinstance(command, Send) and command.message == "hi" and command.type == "text"
    ack = decode_client_frame(json.dumps({"event": "ack", "message_id": ROOM, "status": "read"}))
    assert isinstance(ack, Ack) and ack.status is ReceiptStatus.READ


def test_bad_frames_are_refused_with_their_code() -> None:
    with pytest.raises(TooLarge):
        decode_client_frame("x" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(MalformedMessage):
        decode_client_frame('{"event": "send", "room_id": "' + ROOM + '", "message": "m"}')
    with pytest.raises(InvalidIdentifier):
        decode_client_frame(json.dumps({"event": "join_group", "room_id": ROOM.upper()}))
    with pytest.raises(MalformedMessage):
        decode_client_frame(
            json.dumps(
                {
                    "event": "send",
                    "room_id": ROOM,
                    "message": "m",
                    "client_id": "c",
                    "type": "image",
                }
            )
        )


@given(st.text(max_size=300))
def test_arbitrary_frames_raise_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_client_frame(text)


def test_typing_and_contact_bodies_round_trip() -> None:
    assert decode_typing(encode_typing(True)) is True
    event = ContactEvent(action=ContactAction.REQUEST, note="hi", display_name="Al", handle="al")
    assert decode_contact(encode_contact(event)) == event
    with pytest.raises(MalformedMessage):
        decode_typing(b"\x81\x02")
