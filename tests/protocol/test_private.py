"""Private state bodies of SPEC §22.6."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import MalformedMessage, RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.private import (
    ConversationDeleted,
    decode_private,
    encode_conversation_deleted,
    self_room_id,
)


def test_conversation_deleted_round_trips() -> None:
    room = RoomId(b"r" * 32)
    assert decode_private(encode_conversation_deleted(room)) == ConversationDeleted(room=room)


def test_self_room_is_per_user() -> None:
    a, b = UserId(b"a" * 32), UserId(b"b" * 32)
    assert self_room_id(a) == self_room_id(a) != self_room_id(b)


@pytest.mark.parametrize("body", [b"", b"\x82\x02\x40", b"\x82\x01\x41\x00"])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_private(body)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_private(data)
