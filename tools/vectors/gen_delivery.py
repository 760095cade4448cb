"""Generate protocol/vectors/delivery.json: DELIVER, ACK and ERROR frames (SPEC §11.1-11.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.delivery import (
    AckStatus,
    BatchItem,
    DeliveryResult,
    encode_ack,
    encode_deliver,
    encode_error,
    sign_ack,
)
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.errors import BadSignature, MalformedMessage, NotAuthorized, TooLarge

from .cast import Cast
from .common import VECTORS_DIR, pin, refuse, write_vectors

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """A batch, its signed ack with every status, an error frame and the rejected frames."""
    c = Cast()
    message = c.seal(
        c.alice,
        c.phone,
        kind=Kind.MESSAGE,
        room=c.direct_room,
        seq=1,
        body=b"hi bob",
        content_type="text/plain",
    )
    cert = c.certificate_bytes(c.alice, c.phone)
    bob = c.user(c.bob)
    deliver = encode_deliver(7, [cert], [BatchItem(0, bob, message.wire)])
    results = (
        DeliveryResult(message_id=message.message_id, status=AckStatus.STORED),
        DeliveryResult(message_id=message.message_id, status=AckStatus.DUPLICATE),
        DeliveryResult(message_id=message.message_id, status=AckStatus.RELAYED),
        DeliveryResult(
            message_id=message.message_id, status=AckStatus.REJECTED, code=NotAuthorized.code
        ),
        DeliveryResult(message_id=message.message_id, status=AckStatus.DEFERRED, code=11),
    )
    ack = encode_ack(sign_ack(c.node, 7, results))
    tampered = bytearray(ack)
    tampered[-70] ^= 0x01  # inside the last result, before the signature
    valid: list[dict[str, Any]] = [
        pin("deliver_frame", "a batch of one envelope for bob", hex=deliver.hex()),
        pin("deliver_frame", "an empty batch is well-formed", hex=encode_deliver(0, [], []).hex()),
        pin("deliver_frame", "an ack with each status, signed by the node", hex=ack.hex()),
        pin("deliver_frame", "an error frame", hex=encode_error(TooLarge("too big")).hex()),
    ]
    item: list[CborValue] = [0, bob, message.wire]
    invalid: list[dict[str, Any]] = [
        refuse("deliver_frame", BadSignature, "an ack changed after signing", hex=tampered.hex()),
        refuse(
            "deliver_frame",
            TooLarge,
            "257 items: a batch holds at most 256",
            hex=encode_canonical([1, 1, [cert], [[0, bob, b"x"]] * 257]).hex(),
        ),
        refuse(
            "deliver_frame",
            MalformedMessage,
            "an item names a certificate the batch does not carry",
            hex=encode_canonical([1, 1, [cert], [[1, bob, message.wire]]]).hex(),
        ),
        refuse(
            "deliver_frame",
            MalformedMessage,
            "a recipient of 31 bytes",
            hex=encode_canonical([1, 1, [cert], [[0, bob[:31], message.wire]]]).hex(),
        ),
        refuse(
            "deliver_frame",
            MalformedMessage,
            "a negative batch id",
            hex=encode_canonical([1, -1, [cert], [item]]).hex(),
        ),
        refuse(
            "deliver_frame",
            MalformedMessage,
            "unknown frame type 9",
            hex=encode_canonical([9, 1]).hex(),
        ),
        refuse(
            "deliver_frame",
            MalformedMessage,
            "an ack status outside 1..5",
            hex=encode_canonical(
                [2, 7, c.node.public, [[message.message_id, 6, 0]], bytes(64)]
            ).hex(),
        ),
        refuse("deliver_frame", MalformedMessage, "an empty array", hex="80"),
        refuse("deliver_frame", MalformedMessage, "not canonical: a map", hex="a0"),
    ]
    return write_vectors(
        "delivery",
        spec="SPEC.md §11.1, §11.2, §11.3",
        function="tools/vectors/codecs.py op deliver_frame: decode_frame, verify_ack",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
