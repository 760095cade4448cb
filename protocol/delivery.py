"""The guaranteed delivery protocol `/hearthmesh/deliver/0` (SPEC §11): frames and acks.

A sender writes DELIVER frames, each a batch of envelopes with the device certificates that
prove who sent them; the receiving node answers each batch with one ACK frame holding one result
per envelope (stored, duplicate, relayed, rejected with a code), signed by the node key. Only a
STORED or DUPLICATE result signed by a recipient's home node ends a delivery (SPEC §11.4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .certificate_cache import VerifiedCertificates
from .envelope import MAX_ENVELOPE_BYTES, Envelope, MessageId, load_envelope, verify_envelope
from .errors import (
    BadCertificate,
    ClockSkew,
    HearthError,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
    TooLarge,
)
from .identity import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    DeviceCertificate,
    KeyPair,
    verify_signature,
)

__all__ = [
    "ACK_DOMAIN",
    "DELIVER_PROTOCOL",
    "MAX_BATCH_ENVELOPES",
    "MAX_FRAME_BYTES",
    "UNPARSED_ID",
    "Ack",
    "AckStatus",
    "BatchItem",
    "Deliver",
    "DeliveryResult",
    "FrameType",
    "ProtocolErrorFrame",
    "VerifiedItem",
    "ack_frame",
    "decode_frame",
    "encode_ack",
    "encode_deliver",
    "encode_error",
    "rejected",
    "sign_ack",
    "verify_ack",
    "verify_batch",
]

DELIVER_PROTOCOL: Final = "/hearthmesh/deliver/0"
ACK_DOMAIN: Final = b"hearthmesh/ack/v0\x00"
MAX_BATCH_ENVELOPES: Final = 256
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
"""A DELIVER frame holds at most this many bytes; senders fill batches up to it (SPEC §11.2)."""
_MAX_ERROR_TEXT: Final = 256
UNPARSED_ID: Final = MessageId(bytes(32))
"""Stands in an ACK for an item whose envelope did not parse (results are positional)."""
_ARRAY_4: Final = b"\x84"
_ARRAY_5: Final = b"\x85"
_SIGNATURE_ITEM: Final = b"\x58\x40"  # CBOR byte string header of 64 bytes
_SIGNATURE_TAIL: Final = len(_SIGNATURE_ITEM) + SIGNATURE_BYTES


class FrameType(IntEnum):
    """First element of every frame on the deliver stream (SPEC §11.1)."""

    DELIVER = 1
    ACK = 2
    ERROR = 3


class AckStatus(IntEnum):
    """Per-envelope result in an ACK (SPEC §11.3). Values are never renumbered."""

    STORED = 1
    """Newly stored by the node that signed the ack."""
    DUPLICATE = 2
    """Already stored there: as good as STORED for the sender."""
    RELAYED = 3
    """Held by a relay for a home node that is away: NOT a delivery (SPEC §11.4)."""
    REJECTED = 4
    """Refused with `code`; resending the same bytes will not help."""
    DEFERRED = 5
    """Not taken now (quota, rate, a gap before it); try again later."""


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One envelope of a batch, for one recipient user."""

    certificate: int
    """Index into the batch's certificates: the sender device's certificate."""
    recipient: bytes
    """The user whose home node should store it: a relay holds it for them (SPEC §11.2)."""
    wire: bytes
    """Envelope bytes, not yet verified."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """A batch of envelopes for the receiving node; wire bytes, not yet verified."""

    batch_id: int
    certificates: tuple[bytes, ...]
    items: tuple[BatchItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    """The outcome for one envelope of a batch."""

    message_id: MessageId
    status: AckStatus
    code: int = 0
    """Error code of SPEC §9 when REJECTED or DEFERRED, else 0."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The receiving node's signed answer to one DELIVER frame."""

    batch_id: int
    node_key: bytes
    """Ed25519 public key of the node that signs: its libp2p identity (SPEC §11.3)."""
    results: tuple[DeliveryResult, ...]
    signature: bytes
    unsigned: bytes = field(default=b"", init=False, repr=False, compare=False)
    """The canonical encoding of the fields the signature covers, when `decode_frame` read
    them from one (the frame is that encoding with its header changed and the signature
    appended), so `verify_ack` checks those bytes without encoding them again; empty for an
    ACK built otherwise, whose fields are encoded. Not an argument: an ACK made from another
    (`dataclasses.replace`) has its own fields encoded, never the bytes of the one it copied."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolErrorFrame:
    """The peer refused the stream or a frame as a whole, and will close it."""

    code: int
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedItem:
    """One batch item after verification: an envelope with its proven sender, or an error."""

    message_id: MessageId
    """UNPARSED_ID when the envelope did not parse."""
    envelope: Envelope | None
    certificate: DeviceCertificate | None
    error: RemoteProtocolError | None
    already_stored: bool = False
    """The receiver holds this message id already: nothing was verified."""


# --- encoding -----------------------------------------------------------------------------------


def encode_deliver(batch_id: int, certificates: list[bytes], items: list[BatchItem]) -> bytes:
    """[1, batch_id, [certificate...], [[certificate index, recipient, envelope], ...]]."""
    body: list[CborValue] = [[i.certificate, i.recipient, i.wire] for i in items]
    return encode_canonical([int(FrameType.DELIVER), batch_id, list(certificates), body])


def _ack_unsigned(
    batch_id: int, node_key: bytes, results: tuple[DeliveryResult, ...]
) -> list[CborValue]:
    rows: list[CborValue] = [[r.message_id, int(r.status), r.code] for r in results]
    return [int(FrameType.ACK), batch_id, node_key, rows]


def _signed_ack(
    node: KeyPair, batch_id: int, results: tuple[DeliveryResult, ...]
) -> tuple[bytes, bytes]:
    """The canonical encoding of the unsigned ACK array, and the node's signature of it."""
    unsigned = encode_canonical(_ack_unsigned(batch_id, node.public, results))
    return unsigned, node.sign(ACK_DOMAIN + unsigned)


def sign_ack(node: KeyPair, batch_id: int, results: tuple[DeliveryResult, ...]) -> Ack:
    """The node's signature over `ACK_DOMAIN || CBOR([2, batch_id, node_key, results])`."""
    signature = _signed_ack(node, batch_id, results)[1]
    return Ack(batch_id=batch_id, node_key=node.public, results=results, signature=signature)


def ack_frame(node: KeyPair, batch_id: int, results: tuple[DeliveryResult, ...]) -> bytes:
    """`encode_ack(sign_ack(...))` with one CBOR encoding: the 5-item frame is the signed
    4-item array with its one-byte header changed and the signature appended."""
    unsigned, signature = _signed_ack(node, batch_id, results)
    return _ARRAY_5 + unsigned[1:] + _SIGNATURE_ITEM + signature


def encode_ack(ack: Ack) -> bytes:
    """[2, batch_id, node_key, [[message_id, status, code], ...], signature]."""
    return encode_canonical(
        [*_ack_unsigned(ack.batch_id, ack.node_key, ack.results), ack.signature]
    )


def encode_error(error: HearthError) -> bytes:
    """[3, code, message]: sent before closing a stream whose input was refused whole."""
    text = str(error)[:_MAX_ERROR_TEXT].encode("ascii", "replace").decode("ascii")
    return encode_canonical([int(FrameType.ERROR), int(error.code), text])


# --- decoding -----------------------------------------------------------------------------------


def _uint(value: object) -> int:
    if type(value) is not int or value < 0:
        raise MalformedMessage("expected an unsigned integer")
    return value


def _decode_deliver(value: list[CborValue]) -> Deliver:
    match value:
        case [_, int() as batch_id, list() as certs, list() as items] if batch_id >= 0:
            pass
        case _:
            raise MalformedMessage("not a DELIVER frame")
    if len(items) > MAX_BATCH_ENVELOPES or len(certs) > MAX_BATCH_ENVELOPES:
        raise TooLarge(f"a batch holds at most {MAX_BATCH_ENVELOPES} envelopes")
    if not all(isinstance(c, bytes) for c in certs):
        raise MalformedMessage("certificates are byte strings")
    pairs: list[BatchItem] = []
    for item in items:
        match item:
            case [int() as index, bytes() as recipient, bytes() as wire] if (
                0 <= index < len(certs) and len(recipient) == KEY_BYTES
            ):
                pairs.append(BatchItem(index, recipient, wire))
            case _:
                raise MalformedMessage("a batch item is [certificate index, recipient, envelope]")
    return Deliver(
        batch_id=batch_id,
        certificates=tuple(c for c in certs if isinstance(c, bytes)),
        items=tuple(pairs),
    )


def _decode_ack(value: list[CborValue], data: bytes) -> Ack:
    match value:
        case [_, int() as batch_id, bytes() as node_key, list() as rows, bytes() as signature] if (
            batch_id >= 0 and len(node_key) == KEY_BYTES and len(signature) == SIGNATURE_BYTES
        ):
            pass
        case _:
            raise MalformedMessage("not an ACK frame")
    if len(rows) > MAX_BATCH_ENVELOPES:
        raise TooLarge(f"an ack holds at most {MAX_BATCH_ENVELOPES} results")
    results: list[DeliveryResult] = []
    for row in rows:
        match row:
            case [bytes() as message_id, int() as status, int() as code] if (
                len(message_id) == 32 and status in AckStatus._value2member_map_ and code >= 0
            ):
                results.append(
                    DeliveryResult(
                        message_id=MessageId(message_id), status=AckStatus(status), code=code
                    )
                )
            case _:
                raise MalformedMessage("an ack result is [message id, status, code]")
    ack = Ack(batch_id=batch_id, node_key=node_key, results=tuple(results), signature=signature)
    # `data` is canonical (decode_canonical), so this is exactly what its signature covers
    object.__setattr__(ack, "unsigned", _ARRAY_4 + data[1:-_SIGNATURE_TAIL])
    return ack


def decode_frame(data: bytes) -> Deliver | Ack | ProtocolErrorFrame:
    """Parse one frame of the deliver stream (structure only; see verify_batch / verify_ack).

    Raises:
        TooLarge: over MAX_FRAME_BYTES (checked before parsing) or too many items.
        MalformedMessage: anything else that is not a frame of SPEC §11.1.
    """
    value = decode_canonical(data, max_bytes=MAX_FRAME_BYTES)
    if not isinstance(value, list) or not value:
        raise MalformedMessage("a frame is a non-empty array")
    frame_type = _uint(value[0])
    if frame_type == FrameType.DELIVER:
        return _decode_deliver(value)
    if frame_type == FrameType.ACK:
        return _decode_ack(value, data)
    if frame_type == FrameType.ERROR:
        match value:
            case [_, int() as code, str() as message] if (
                code >= 0 and len(message) <= _MAX_ERROR_TEXT  # no cut: one encoding per frame
            ):
                return ProtocolErrorFrame(code=code, message=message)
        raise MalformedMessage("not an ERROR frame")
    raise MalformedMessage(f"unknown frame type {frame_type}")


# --- verification -------------------------------------------------------------------------------


def verify_ack(ack: Ack) -> None:
    """Check the node's signature. Raises BadSignature."""
    unsigned = ack.unsigned or encode_canonical(
        _ack_unsigned(ack.batch_id, ack.node_key, ack.results)
    )
    verify_signature(ack.node_key, ACK_DOMAIN + unsigned, ack.signature)


def verify_batch(
    batch: Deliver,
    *,
    now_ms: int,
    known: Callable[[MessageId], bool] = lambda _: False,
    certificates: VerifiedCertificates | None = None,
) -> list[VerifiedItem]:
    """Verify every item: envelope signature, the certificate, and that they name one sender.

    Returns one item per batch item, in order. Each item fails alone: one bad envelope never
    spoils the rest of the batch (SPEC §11.2). An item whose message id `known` says is stored
    already comes back `already_stored`, unverified: the id covers every signed byte, so the
    receiver holds these very contents and needs nothing from this copy. `certificates`
    remembers certificates verified in earlier batches. An envelope the batch carries for
    several recipients (a relay hop for a group's absent members, SPEC §11.7.2) is decoded and
    verified once: the same bytes are the same envelope.
    """
    seen = VerifiedCertificates() if certificates is None else certificates
    proofs: dict[int, DeviceCertificate | RemoteProtocolError] = {}
    checked: dict[bytes, Envelope] = {}
    """Envelopes of this batch whose signature was verified, by their bytes."""
    verified: list[VerifiedItem] = []
    for index, wire in ((i.certificate, i.wire) for i in batch.items):
        if index not in proofs:
            try:
                proofs[index] = seen.verify_encoded(batch.certificates[index], now_ms=now_ms)
            except RemoteProtocolError as exc:
                proofs[index] = exc
        try:
            envelope = checked.get(wire)
            if envelope is None:
                if len(wire) > MAX_ENVELOPE_BYTES:
                    raise TooLarge(f"envelope of {len(wire)} bytes")
                envelope = load_envelope(wire)
                if known(envelope.message_id):
                    verified.append(
                        VerifiedItem(
                            message_id=envelope.message_id,
                            envelope=None,
                            certificate=None,
                            error=None,
                            already_stored=True,
                        )
                    )
                    continue
                verify_envelope(envelope)
                checked[wire] = envelope
        except RemoteProtocolError as exc:
            verified.append(
                VerifiedItem(message_id=UNPARSED_ID, envelope=None, certificate=None, error=exc)
            )
            continue
        proof = proofs[index]
        error: RemoteProtocolError | None = None
        if isinstance(proof, ClockSkew):
            error = proof  # transient: the receiver defers, the sender retries
        elif isinstance(proof, RemoteProtocolError):
            error = BadCertificate(f"sender certificate: {proof}")
        elif proof.user != envelope.sender_user or proof.device != envelope.sender_device:
            error = NotAuthorized("the certificate does not name this sender")
        verified.append(
            VerifiedItem(
                message_id=envelope.message_id,
                envelope=envelope if error is None else None,
                certificate=None if isinstance(proof, RemoteProtocolError) else proof,
                error=error,
            )
        )
    return verified


def rejected(message_id: MessageId, error: HearthError) -> DeliveryResult:
    """The REJECTED result for `error`, with its wire code."""
    return DeliveryResult(message_id=message_id, status=AckStatus.REJECTED, code=int(error.code))
