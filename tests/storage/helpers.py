"""Envelopes for storage tests: real sealed envelopes with chosen order fields; a busy loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed

__all__ = ["PEER", "ROOM_A", "ROOM_B", "USER_A", "USER_B", "device", "kept_busy", "make_envelope"]

ROOM_A = RoomId(b"\xaa" * 32)
ROOM_B = RoomId(b"\xbb" * 32)
USER_A = UserId(b"\x0a" * 32)
USER_B = UserId(b"\x0b" * 32)
PEER = b"12D3KooWStorageTestPeer"
"""The sending peer of relayed envelopes, as the node passes it (its peer id, ASCII)."""

_DEVICES: dict[int, KeyPair] = {}


def device(index: int) -> KeyPair:
    """A fixed device key per index."""
    if index not in _DEVICES:
        _DEVICES[index] = keypair_from_seed(index.to_bytes(32, "big"))
    return _DEVICES[index]


def make_envelope(
    room: bytes = ROOM_A,
    *,
    seq: int = 1,
    wall_ms: int = 1_000,
    counter: int = 0,
    device_index: int = 1,
    body: bytes = b"hello",
    kind: Kind = Kind.MESSAGE,
    user: bytes = USER_A,
    content_type: str = "text/plain",
) -> Envelope:
    """A sealed envelope of `device(device_index)`."""
    return seal(
        device(device_index),
        kind=kind,
        room=RoomId(room),
        sender_user=UserId(user),
        seq=seq,
        hlc=Timestamp(wall_ms, counter),
        content_type=content_type,
        body=body,
    )


@contextlib.asynccontextmanager
async def kept_busy() -> AsyncIterator[None]:
    """A callback that schedules itself again at every turn, so the loop always has one
    ready: an `AsyncStore` then hands each commit to its writer thread, as in a burst, instead
    of committing in place on an idle loop."""
    loop = asyncio.get_running_loop()
    busy = True

    def again() -> None:
        if busy:
            loop.call_soon(again)

    loop.call_soon(again)
    try:
        yield
    finally:
        busy = False
