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
    decode_count,
    decode_text,
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


# --- the input rules of SPEC §15.6, and the frames the fuzzers of issue #12 found -------------

DIGEST = "cd" * 32
_JSON: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "\udfff", "a\udc00b", 10**400]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_VALID: dict[str, dict[str, object]] = {
    "send": {"room_id": ROOM, "message": "hi", "client_id": "c", "type": "text"},
    "send_media": {
        "room_id": ROOM,
        "message": "",
        "client_id": "c",
        "type": "image",
        "media": {"digest": DIGEST, "content_type": "image/png", "size": 5},
    },
    "ack": {"message_id": ROOM, "status": "read"},
    "typing": {"room_id": ROOM, "active": True},
    "create_conversation": {"recipient_id": "u" + "a" * 52, "request_id": "r"},
    "join_group": {"room_id": ROOM, "request_id": "r"},
    "leave_group": {"room_id": ROOM, "request_id": "r"},
    "get_all_group": {"request_id": "r"},
}


@pytest.mark.parametrize(
    "frame",
    [
        '{"event":"send","room_id":"' + ROOM + '","message":"","client_id":"c","type":{}}',
        '{"event":"ack","message_id":"' + ROOM + '","status":[]}',
        '{"event":"send","room_id":"' + ROOM + '","message":"\\ud800","client_id":"c"}',
        '{"event":"send","room_id":"' + ROOM + '","message":"m","client_id":"\\ud800"}',
        '{"event":"get_all_group","request_id":"\\udfff"}',
        '{"event":"typing","room_id":"' + ROOM + '","active":{}}',
    ],
)
def test_mistyped_or_unencodable_fields_are_malformed(frame: str) -> None:
    """Finding 8: these raised TypeError / UnicodeEncodeError out of the decoder."""
    with pytest.raises(MalformedMessage):
        decode_client_frame(frame)


@pytest.mark.parametrize("content_type", ["text/html\r\nSet-Cookie: a=b", "image/png\n", "png"])
def test_a_media_send_needs_an_rfc6838_content_type(content_type: str) -> None:
    frame = {"event": "send", **_VALID["send_media"]}
    frame["media"] = {"digest": DIGEST, "content_type": content_type, "size": 5}
    with pytest.raises(MalformedMessage):
        decode_client_frame(json.dumps(frame))


@given(
    event=st.sampled_from(sorted(_VALID)),
    field=st.text(min_size=1, max_size=12),
    value=_JSON,
    drop=st.booleans(),
)
def test_any_value_in_any_field_raises_only_protocol_errors(
    event: str, field: str, value: object, drop: bool
) -> None:
    """Every field of every client event is type-checked in the decoder (SPEC §15.6)."""
    frame: dict[str, object] = {"event": event.removesuffix("_media"), **_VALID[event]}
    names = sorted(frame)
    name = names[len(field) % len(names)] if field[0] != "+" else field
    if drop:
        frame.pop(name, None)
    else:
        frame[name] = value
        if isinstance(frame.get("media"), dict) and field[0] == "m":
            frame["media"] = {**_VALID["send_media"]["media"], field: value}  # type: ignore[dict-item]
    try:
        text = json.dumps(frame)
    except ValueError:  # an integer too long for json itself: nothing to send
        return
    with contextlib.suppress(RemoteProtocolError):
        decode_client_frame(text)


@pytest.mark.parametrize(
    "text", ["²", "¹", "\u0665", "1" * 5000, "-1", "+5", " 5", "0x10", "", "101"]
)
def test_counts_are_ascii_digits_within_bounds(text: str) -> None:
    """Finding 8: `isdigit` took `²` (then `int` failed: 500) and read Arabic-Indic 5 as 5."""
    with pytest.raises(MalformedMessage):
        decode_count(text, "page_size", 1, 100)
    assert decode_count("007", "page_size", 1, 100) == 7


def test_text_is_valid_unicode_within_its_bound() -> None:
    assert decode_text("héllo", "name", max_bytes=6) == "héllo"
    with pytest.raises(TooLarge):
        decode_text("héllo!", "name", max_bytes=6)
    with pytest.raises(MalformedMessage):
        decode_text("a\ud800", "name", max_bytes=64)
    with pytest.raises(MalformedMessage):
        decode_text(5, "name", max_chars=64)
