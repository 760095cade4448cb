"""Generate sync.json (SPEC §23), media.json (§25) and fetch.json (§26): the frames that move
history and blobs between nodes, with the media descriptor a message carries."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.content import MediaRef, encode_media
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.errors import MalformedMessage, NotFound, TooLarge
from hearthmesh.protocol.fetch import FetchRequest
from hearthmesh.protocol.fetch import encode_answer as encode_fetch_answer
from hearthmesh.protocol.fetch import encode_request as encode_fetch_request
from hearthmesh.protocol.identity import DeviceId
from hearthmesh.protocol.media import DigestMismatch, answer_frames, encode_media_error
from hearthmesh.protocol.media import encode_request as encode_media_request
from hearthmesh.protocol.sync import RoomEntry, encode_done, encode_reconcile, encode_room_list

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, pin, refuse, write_vectors

__all__ = ["generate"]


def _sync(c: Cast, directory: Path) -> Path:
    alice, bob = c.user(c.alice), c.user(c.bob)
    rooms = [RoomEntry(room=c.direct_room, direct_users=(alice, bob)), RoomEntry(room=c.group_room)]
    valid = [
        pin(
            "sync_frame",
            "ROOMS: a direct room with its users, a group",
            hex=encode_room_list(rooms).hex(),
        ),
        pin(
            "sync_frame",
            "RECONCILE: one §21 message for a room",
            hex=encode_reconcile(c.group_room, bytes.fromhex("8100")).hex(),
        ),
        pin(
            "sync_frame",
            "RECONCILE, empty: nothing more",
            hex=encode_reconcile(c.group_room, b"").hex(),
        ),
        pin("sync_frame", "DONE", hex=encode_done().hex()),
    ]
    invalid = [
        refuse(
            "sync_frame",
            MalformedMessage,
            "a room entry with one user",
            hex=encode_canonical([1, [[c.direct_room, [alice]]]]).hex(),
        ),
        refuse(
            "sync_frame",
            MalformedMessage,
            "a room id of 31 bytes",
            hex=encode_canonical([2, c.group_room[:31], b""]).hex(),
        ),
        refuse("sync_frame", MalformedMessage, "frame type 4", hex=encode_canonical([4]).hex()),
        refuse(
            "sync_frame",
            MalformedMessage,
            "DONE with an argument",
            hex=encode_canonical([3, 0]).hex(),
        ),
    ]
    return write_vectors(
        "sync",
        spec="SPEC.md §23",
        function="tools/vectors/codecs.py op sync_frame: decode_sync_frame",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def _media(directory: Path) -> Path:
    blob = bytes(range(256)) * 3
    digest = hashlib.sha256(blob).digest()
    frames = [f.hex() for f in answer_frames(blob)]
    ref = MediaRef(
        type="image", digest=digest, content_type="image/png", size=len(blob), caption="a cat"
    )
    bad = MediaRef(type="image", digest=digest, content_type="image/png", size=1)
    valid = [
        pin("media_descriptor", "an image reference with a caption", hex=encode_media(ref).hex()),
        pin(
            "media_request", "REQUEST a blob by its sha-256", hex=encode_media_request(digest).hex()
        ),
        pin("media_answer", "a CHUNK at offset 0", hex=frames[0]),
        pin("media_answer", "END: 768 bytes in all", hex=frames[-1]),
        pin(
            "media_answer",
            "ERROR: not found",
            hex=encode_media_error(NotFound("no such blob")).hex(),
        ),
        pin(
            "media_download",
            "the whole answer yields the blob",
            digest_hex=digest.hex(),
            declared_size=len(blob),
            frames_hex=frames,
        ),
    ]
    invalid = [
        refuse(
            "media_descriptor",
            MalformedMessage,
            "media type 'sound'",
            hex=encode_canonical(["sound", digest, "audio/ogg", 1, ""]).hex(),
        ),
        refuse(
            "media_descriptor",
            MalformedMessage,
            "a digest of 31 bytes",
            hex=encode_canonical(["file", digest[:31], "text/plain", 1, ""]).hex(),
        ),
        refuse(
            "media_request",
            MalformedMessage,
            "a digest of 31 bytes",
            hex=encode_canonical([1, digest[:31]]).hex(),
        ),
        refuse(
            "media_request", TooLarge, "over 64 bytes", hex=encode_canonical([1, bytes(64)]).hex()
        ),
        refuse(
            "media_answer",
            MalformedMessage,
            "a negative offset",
            hex=encode_canonical([2, -1, b"x"]).hex(),
        ),
        refuse(
            "media_download",
            MalformedMessage,
            "a chunk out of order",
            digest_hex=digest.hex(),
            declared_size=len(blob),
            frames_hex=[encode_canonical([2, 5, b"x"]).hex()],
        ),
        refuse(
            "media_download",
            TooLarge,
            "more bytes than declared",
            digest_hex=digest.hex(),
            declared_size=bad.size,
            frames_hex=frames,
        ),
        refuse(
            "media_download",
            DigestMismatch,
            "bytes that do not hash to the digest asked for",
            digest_hex=bytes(32).hex(),
            declared_size=len(blob),
            frames_hex=frames,
        ),
    ]
    return write_vectors(
        "media",
        spec="SPEC.md §25.2, §25.4",
        function="tools/vectors/codecs.py ops media_*",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def _fetch(c: Cast, directory: Path) -> Path:
    device = DeviceId(c.phone.public)
    request = FetchRequest(room=c.group_room, sender_device=device, first_seq=3, last_seq=5)
    wires = [c.group_message(n, body=b"m", tick=n).wire for n in (3, 4, 5)]
    cert = c.certificate_bytes(c.alice, c.phone)
    room: RoomId = c.group_room
    asked = {"request_hex": encode_fetch_request(request).hex(), "now_ms": NOW_MS}

    def sealed(seq: int, *, of: RoomId = room, body: bytes = b"m", bob: bool = False) -> bytes:
        user, device = (c.bob, c.laptop) if bob else (c.alice, c.phone)
        return c.seal(
            user, device, kind=Kind.MESSAGE, room=of, seq=seq, body=body, content_type="text/plain"
        ).wire

    bob_cert = c.certificate_bytes(c.bob, c.laptop)
    strays = [
        (cert, sealed(2)),  # below the range
        (cert, wires[0]),
        (cert, sealed(4, of=c.direct_room)),  # another room
        (cert, wires[1]),
        (cert, sealed(4, body=b"a second envelope numbered 4")),  # a number again
        (bob_cert, sealed(4, bob=True)),  # another device
        (cert, wires[2]),
        (cert, sealed(6)),  # above it
    ]
    tampered = bytearray(wires[1])
    tampered[-70] ^= 1  # a body byte: it still parses, its signature no longer verifies
    valid = [
        pin(
            "fetch_request",
            "seq 3..5 of alice's phone in the group",
            hex=encode_fetch_request(request).hex(),
        ),
        pin(
            "fetch_answer",
            "three envelopes sharing one certificate",
            hex=encode_fetch_answer([(cert, w) for w in wires]).hex(),
        ),
        pin("fetch_answer", "ERROR frame", hex=encode_canonical([3, 14, "not found"]).hex()),
        pin(
            "fetch_taken",
            "what was asked for, in the order it came",
            hex=encode_fetch_answer([(cert, w) for w in reversed(wires)]).hex(),
            **asked,
        ),
        pin(
            "fetch_taken",
            "strays dropped: below and above the range, another room, a number again, another "
            "device (§26.5)",
            hex=encode_fetch_answer(strays).hex(),
            **asked,
        ),
        pin(
            "fetch_taken",
            "a tampered 4 is discarded alone (BAD_SIGNATURE); 3 and 5 are taken",
            hex=encode_fetch_answer(
                [(cert, wires[0]), (cert, bytes(tampered)), (cert, wires[2])]
            ).hex(),
            **asked,
        ),
        pin(
            "fetch_taken",
            "an item that is no envelope is dropped",
            hex=encode_canonical([2, [cert], [[0, b"\x00not cbor"], [0, wires[0]]]]).hex(),
            **asked,
        ),
    ]
    invalid = [
        refuse(
            "fetch_request",
            TooLarge,
            "a range of 257 numbers",
            hex=encode_canonical([1, room, device, 1, 257]).hex(),
        ),
        refuse(
            "fetch_request",
            MalformedMessage,
            "first after last",
            hex=encode_canonical([1, room, device, 5, 3]).hex(),
        ),
        refuse(
            "fetch_request",
            MalformedMessage,
            "seq 0",
            hex=encode_canonical([1, room, device, 0, 3]).hex(),
        ),
        refuse(
            "fetch_answer",
            MalformedMessage,
            "an item names a missing certificate",
            hex=encode_canonical([2, [cert], [[1, wires[0]]]]).hex(),
        ),
        refuse(
            "fetch_answer",
            TooLarge,
            "257 items",
            hex=encode_canonical([2, [cert], [[0, b"x"]] * 257]).hex(),
        ),
        refuse(
            "fetch_taken",
            NotFound,
            "an ERROR frame: nothing taken, the code is the refusal",
            hex=encode_canonical([3, 14, "not found"]).hex(),
            **asked,
        ),
    ]
    return write_vectors(
        "fetch",
        spec="SPEC.md §26.2, §26.3, §26.5",
        function="tools/vectors/codecs.py ops fetch_request, fetch_answer, fetch_taken",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def generate(directory: Path = VECTORS_DIR) -> list[Path]:
    """Write the three files."""
    c = Cast()
    return [_sync(c, directory), _media(directory), _fetch(c, directory)]
