"""Encrypted envelope bodies and the arrival decision for them (SPEC §27.6, §27.7), sans-I/O.

A user's content is sealed as CBOR [content type, body] encrypted with the sending device's
Megolm session of the room; the envelope then carries ENCRYPTED_CONTENT_TYPE and the
`EncryptedBody`, and its signature covers the ciphertext, so a relay verifies authenticity and
order without reading. vodozemac is pure computation, so it is used here; its exceptions never
leave this module (they become Undecryptable). Owns no state: the sessions are node state.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

import vodozemac

from ..canonical import decode_canonical, encode_canonical, read_kept
from ..envelope import MAX_BODY_BYTES, MAX_CONTENT_TYPE_BYTES, Envelope, MessageId
from ..errors import (
    KeyMismatch,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    Replayed,
    Undecryptable,
    UnsupportedVersion,
)
from ..identity import KEY_BYTES, DeviceId

__all__ = [
    "ENCRYPTED_CONTENT_TYPE",
    "MEGOLM_V1",
    "Decrypt",
    "EncryptedBody",
    "Hold",
    "Opened",
    "check_replay",
    "decode_encrypted_body",
    "decode_plaintext",
    "encode_encrypted_body",
    "encode_plaintext",
    "encrypt_content",
    "encrypt_plaintext",
    "open_encrypted",
    "opened_view",
    "plan_open",
    "session_id_bytes",
    "signed_before_known",
]

ENCRYPTED_CONTENT_TYPE: Final = "application/x-hearthmesh-megolm"
MEGOLM_V1: Final = 1
"""The one algorithm of this revision: Megolm v1 as vodozemac 0.10 implements it."""
_VERSION: Final = 0
_MEGOLM_OVERHEAD_BYTES: Final = 256
"""Megolm adds a version byte, index varint, MAC (8) and signature (64) to the padded text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedBody:
    """The body of an encrypted envelope (SPEC §27.6). Field order is wire order."""

    algorithm: int
    session_id: bytes
    """The Megolm session's Ed25519 key: which inbound session opens this."""
    ciphertext: bytes
    """vodozemac's MegolmMessage bytes."""


def encode_encrypted_body(value: EncryptedBody) -> bytes:
    """CBOR [version, algorithm, session id, ciphertext]."""
    return encode_canonical([_VERSION, value.algorithm, value.session_id, value.ciphertext])


def decode_encrypted_body(body: bytes) -> EncryptedBody:
    """Parse an encrypted body (not its ciphertext).

    Raises:
        MalformedMessage: not [version, algorithm, 32-byte session id, ciphertext].
        UnsupportedVersion: a version or algorithm this revision does not speak.
    """
    match decode_canonical(body, max_bytes=MAX_BODY_BYTES):
        case [int() as version, int() as algorithm, bytes() as session_id, bytes() as ciphertext]:
            if version != _VERSION or algorithm != MEGOLM_V1:
                raise UnsupportedVersion(f"encrypted body {version}/{algorithm}")
            if len(session_id) != KEY_BYTES or not ciphertext:
                raise MalformedMessage("session id is 32 bytes; ciphertext is not empty")
            return EncryptedBody(algorithm=algorithm, session_id=session_id, ciphertext=ciphertext)
    raise MalformedMessage("encrypted body is [version, algorithm, session id, ciphertext]")


def encode_plaintext(content_type: str, body: bytes) -> bytes:
    """CBOR [content type, body]: what Megolm encrypts."""
    return encode_canonical([content_type, body])


def decode_plaintext(data: bytes, *, kept: bool = False) -> tuple[str, bytes]:
    """Parse a decrypted [content type, body] (`kept`: one this node decoded before it kept
    it, read back from its store, whose encoding is not checked again). Raises
    MalformedMessage."""
    decode = read_kept if kept else decode_canonical
    match decode(data, max_bytes=MAX_BODY_BYTES):
        case [str() as content_type, bytes() as body]:
            if not content_type or len(content_type.encode()) > MAX_CONTENT_TYPE_BYTES:
                raise MalformedMessage("inner content type is 1..64 bytes")
            if content_type == ENCRYPTED_CONTENT_TYPE:
                raise MalformedMessage("an encrypted body inside an encrypted body")
            return content_type, body
    raise MalformedMessage("plaintext is [content type, body]")


def session_id_bytes(session_id: str) -> bytes:
    """vodozemac's unpadded base64 session id as its 32 raw bytes."""
    return key_bytes(session_id)


def key_bytes(text: str) -> bytes:
    """One of vodozemac's unpadded base64 key strings as its raw bytes."""
    return base64.b64decode(text + "=" * (-len(text) % 4))


def key_text(raw: bytes) -> str:
    """Raw key bytes as the unpadded base64 string vodozemac's key types are made from."""
    return base64.b64encode(raw).decode().rstrip("=")


def encrypt_content(
    session: vodozemac.GroupSession, content_type: str, body: bytes
) -> tuple[bytes, int]:
    """The encrypted body of (content type, body) and the Megolm index it used.

    The caller MUST persist the advanced session in the transaction that commits the envelope
    (SPEC §27.8): an older copy would reuse the index.

    Raises:
        LocalProtocolError: the result would not fit MAX_BODY_BYTES.
    """
    return encrypt_plaintext(session, encode_plaintext(content_type, body))


def encrypt_plaintext(session: vodozemac.GroupSession, plaintext: bytes) -> tuple[bytes, int]:
    """`encrypt_content` of a plaintext already encoded (`encode_plaintext`), which a sender
    keeps for its own view: encoded once for both.

    Raises:
        LocalProtocolError: the result would not fit MAX_BODY_BYTES.
    """
    if len(plaintext) + _MEGOLM_OVERHEAD_BYTES > MAX_BODY_BYTES:
        raise LocalProtocolError("content too large to encrypt into one envelope")
    index = session.message_index
    message = session.encrypt(plaintext)
    encrypted = EncryptedBody(
        algorithm=MEGOLM_V1,
        session_id=session_id_bytes(session.session_id),
        ciphertext=message.to_bytes(),
    )
    return encode_encrypted_body(encrypted), index


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """A decrypted body: what the API shows in place of the ciphertext."""

    index: int
    content_type: str
    body: bytes
    plaintext: bytes
    """[content type, body] as decrypted: canonical (it was decoded strictly), so it is what
    the store keeps, with no second encoding."""


def open_encrypted(session: vodozemac.InboundGroupSession, encrypted: EncryptedBody) -> Opened:
    """Decrypt with the inbound session `plan_open` named.

    Raises:
        Undecryptable: the MAC or the session's signature fails, the index precedes the
            session's first known index, or the plaintext is not [content type, body].
    """
    try:
        message = vodozemac.MegolmMessage.from_bytes(encrypted.ciphertext)
        decrypted = session.decrypt(message)
    except ValueError as exc:  # every vodozemac exception is a ValueError
        raise Undecryptable(f"megolm: {type(exc).__name__}") from None
    try:
        content_type, body = decode_plaintext(decrypted.plaintext)
    except RemoteProtocolError:
        raise Undecryptable("decrypted plaintext is not [content type, body]") from None
    return Opened(
        index=decrypted.message_index,
        content_type=content_type,
        body=body,
        plaintext=decrypted.plaintext,
    )


_SIGNATURE_BYTES: Final = 64
"""A Megolm message ends with the Ed25519 signature of everything before it."""


def signed_before_known(session: vodozemac.InboundGroupSession, encrypted: EncryptedBody) -> bool:
    """Is `encrypted` a message `session` cannot open only because its index precedes the
    first index the session is known from, its signature by the session's key good (SPEC
    §27.11.2)? Then the session's owner made it, and a key of the same session from an earlier
    index (a forward, a key request) opens it: the home holds it. A message whose signature
    fails is broken whatever its index (§27.6.2): False. Call it after `open_encrypted` failed.
    """
    try:
        message = vodozemac.MegolmMessage.from_bytes(encrypted.ciphertext)
        first = session.first_known_index
        if message.message_index() >= first:
            return False
        exported = session.export_at(first)
        if exported is None:
            return False
        # an exported key ends with the session's Ed25519 key (vodozemac's format, v1)
        signing = key_bytes(exported.to_base64())[-KEY_BYTES:]
        vodozemac.Ed25519PublicKey.from_base64(key_text(signing)).verify_signature(
            encrypted.ciphertext[:-_SIGNATURE_BYTES], message.signature()
        )
    except ValueError:  # every vodozemac exception is a ValueError
        return False
    return True


def opened_view(envelope: Envelope, content_type: str, body: bytes) -> Envelope:
    """The envelope as a member's home shows it: its content in the clear in place of the
    ciphertext. Its `wire` (and id and signature) stay the encrypted envelope's, which is what
    is stored, forwarded and synced; only readers of the content see the difference."""
    return Envelope(  # named field by field: `dataclasses.replace` costs twice as much
        version=envelope.version,
        kind=envelope.kind,
        room=envelope.room,
        sender_user=envelope.sender_user,
        sender_device=envelope.sender_device,
        seq=envelope.seq,
        hlc=envelope.hlc,
        content_type=content_type,
        body=body,
        signature=envelope.signature,
        wire=envelope.wire,
        message_id=envelope.message_id,
    )


@dataclass(frozen=True, slots=True)
class Decrypt:
    """Open the body with the inbound session of this id."""

    session_id: bytes


@dataclass(frozen=True, slots=True)
class Hold:
    """No room key for this session yet: keep the ciphertext, ask the sender's devices, retry."""

    session_id: bytes


def plan_open(
    encrypted: EncryptedBody, *, sender_device: DeviceId, session_owner: DeviceId | None
) -> Decrypt | Hold:
    """What to do with an encrypted body at a member's home (SPEC §27.7).

    `session_owner` is the device whose room key gave us the session, None when we have none.

    Raises:
        KeyMismatch: the session belongs to another device than the envelope's sender (one
            member re-using another's ciphertext under its own signature).
    """
    if session_owner is None:
        return Hold(encrypted.session_id)
    if session_owner != sender_device:
        raise KeyMismatch("megolm session shared by another device than the sender")
    return Decrypt(encrypted.session_id)


def check_replay(seen: MessageId | None, message_id: MessageId) -> bool:
    """Whether (session, index) is new. `seen` is the message that already used it, if any.

    Returns False for the same message again (idempotent), True for a first use.

    Raises:
        Replayed: the pair already opened another message (SPEC §27.7).
    """
    if seen is None:
        return True
    if seen != message_id:
        raise Replayed("megolm (session, index) already used by another message")
    return False
