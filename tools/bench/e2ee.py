"""`hearthmesh bench e2ee`: the cost of end-to-end encryption per message and per key share.

Per message, through `DeviceCrypto` over the in-memory store (so pickling is counted, the
fsync is not): `encrypt_sign_us` = Megolm encrypt + store the advance + seal; and
`verify_decrypt_us` = decode and verify + open once per index. `room_key_share_ms` = one
session key to N member devices over new Olm sessions (claimed one-time keys), for N = 10, 100.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from hearthmesh.node.e2ee.device_crypto import DeviceCrypto, Recipient
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Kind, RoomId, decode_envelope, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, generate_keypair
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.tools.bench.e2ee_media import run_media

__all__ = ["run"]

_NOW_MS = 1_700_000_000_000
_LIMITS = e2ee.Rotation(max_messages=1 << 30)


def _device() -> DeviceCrypto:
    return DeviceCrypto(
        MemoryStore(),
        pickle_key=os.urandom(32),
        device_key=generate_keypair(os.urandom),
        user=UserId(os.urandom(32)),
    )


def _share_ms(sender: DeviceCrypto, room: RoomId, members: list[DeviceCrypto]) -> float:
    recipients = [
        Recipient(bundle=m.key_bundle(_NOW_MS), one_time_key=m.claim_one_time_key())
        for m in members
    ]
    session, _, _ = sender.outbound(room, now_ms=_NOW_MS, member_removed=True, limits=_LIMITS)
    started = time.perf_counter()
    sender.share(room, session, recipients)
    return (time.perf_counter() - started) * 1000


def run(quick: bool) -> dict[str, Any]:
    """Encrypt, seal, verify and open `count` 200-byte messages; share keys to 10 and 100."""
    count = 200 if quick else 2_000
    user, device = generate_keypair(os.urandom), generate_keypair(os.urandom)
    room = RoomId(os.urandom(32))
    sender = DeviceCrypto(
        MemoryStore(), pickle_key=os.urandom(32), device_key=device, user=UserId(user.public)
    )
    session, _, _ = sender.outbound(room, now_ms=_NOW_MS, member_removed=False, limits=_LIMITS)
    body = os.urandom(200)
    wires = []
    started = time.perf_counter()
    for seq in range(1, count + 1):
        session, record, _ = sender.outbound(
            room, now_ms=_NOW_MS, member_removed=False, limits=_LIMITS
        )
        encrypted = sender.encrypt(room, session, record, "text/plain", body)
        wires.append(
            seal(
                device,
                kind=Kind.MESSAGE,
                room=room,
                sender_user=UserId(user.public),
                seq=seq,
                hlc=Timestamp(wall_ms=_NOW_MS, counter=seq),
                content_type=e2ee.ENCRYPTED_CONTENT_TYPE,
                body=encrypted,
            ).wire
        )
    encrypt_s = time.perf_counter() - started
    started = time.perf_counter()
    for wire in wires:
        opened = sender.open(decode_envelope(wire))  # the sender's own copy opens like a member's
        assert isinstance(opened, e2ee.Opened)
    decrypt_s = time.perf_counter() - started
    shares: dict[str, float] = {}
    for members in (10, 100):
        runs = [
            _share_ms(sender, room, [_device() for _ in range(members)])
            for _ in range(3 if quick or members == 100 else 5)
        ]
        shares[str(members)] = round(statistics.median(runs), 2)
    return {
        "messages": count,
        "body_bytes": len(body),
        "wire_bytes": len(wires[0]),
        "encrypt_sign_us": round(encrypt_s / count * 1e6, 1),
        "verify_decrypt_us": round(decrypt_s / count * 1e6, 1),
        "room_key_share_ms": shares,
        "media": run_media(quick),
    }
