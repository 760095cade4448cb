"""`hearthmesh bench codec`: envelopes sealed (encode + sign) and decoded (+ verify) per second."""

from __future__ import annotations

import os
import time
from typing import Any

from hearthmesh.protocol.envelope import Kind, RoomId, decode_envelope, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, generate_keypair

__all__ = ["run"]


def run(quick: bool) -> dict[str, Any]:
    """Seal and decode `count` 200-byte text envelopes; report the rates and the wire size."""
    count = 2_000 if quick else 20_000
    user = generate_keypair(os.urandom)
    device = generate_keypair(os.urandom)
    room = RoomId(os.urandom(32))
    body = os.urandom(200)
    started = time.perf_counter()
    wires = [
        seal(
            device,
            kind=Kind.MESSAGE,
            room=room,
            sender_user=UserId(user.public),
            seq=seq,
            hlc=Timestamp(wall_ms=1_700_000_000_000, counter=seq),
            content_type="text/plain",
            body=body,
        ).wire
        for seq in range(1, count + 1)
    ]
    sealed_s = time.perf_counter() - started
    started = time.perf_counter()
    for wire in wires:
        decode_envelope(wire)
    decoded_s = time.perf_counter() - started
    return {
        "envelopes": count,
        "body_bytes": len(body),
        "wire_bytes": len(wires[0]),
        "encode_per_s": round(count / sealed_s),
        "decode_per_s": round(count / decoded_s),
    }
