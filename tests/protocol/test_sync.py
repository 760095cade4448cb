"""Sync stream frames of SPEC §23."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import MalformedMessage, RemoteProtocolError, TooLarge
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.sync import (
    MAX_ROOMS,
    RoomEntry,
    RoomList,
    RoomReconcile,
    SyncDone,
    decode_sync_frame,
    encode_done,
    encode_reconcile,
    encode_room_list,
)

ROOM = RoomId(b"r" * 32)


def test_frames_round_trip() -> None:
    entries = [
        RoomEntry(room=ROOM),
        RoomEntry(room=ROOM, direct_users=(UserId(b"a" * 32), UserId(b"b" * 32))),
    ]
    assert decode_sync_frame(encode_room_list(entries)) == RoomList(rooms=tuple(entries))
    assert decode_sync_frame(encode_reconcile(ROOM, b"msg")) == RoomReconcile(
        room=ROOM, message=b"msg"
    )
    assert decode_sync_frame(encode_done()) == SyncDone()


@pytest.mark.parametrize(
    "value",
    [[9], [1, [[b"short", []]]], [1, [[b"r" * 32, [b"a" * 32]]]], [2, b"short", b""], [3, 1]],
)
def test_malformed_frames(value: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        decode_sync_frame(encode_canonical(value))  # type: ignore[arg-type]


def test_too_many_rooms_is_too_large() -> None:
    with pytest.raises(TooLarge):
        decode_sync_frame(encode_room_list([RoomEntry(room=ROOM)] * (MAX_ROOMS + 1)))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_sync_frame(data)
