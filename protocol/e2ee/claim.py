"""Key claim `/hearthmesh/keys/0` (SPEC §27.2.2): a device's bundle and one one-time key.

One REQUEST `[1, device]` per stream, answered by `[2, bundle, one-time key | null]` or an ERROR
`[3, code, message]`. The asker checks that both keys are signed by the device it asked for
(`check_claim_answer`): the home serving them cannot swap in keys of its own. Owns no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..canonical import decode_canonical, encode_canonical
from ..delivery import ProtocolErrorFrame
from ..errors import HearthError, KeyMismatch, MalformedMessage
from ..identity import KEY_BYTES, DeviceId
from .keys import (
    KeyBundle,
    OneTimeKey,
    decode_key_bundle,
    decode_one_time_key,
    verify_key_bundle,
    verify_one_time_key,
)

__all__ = [
    "KEYS_PROTOCOL",
    "MAX_CLAIM_FRAME_BYTES",
    "ClaimAnswer",
    "check_claim_answer",
    "decode_claim_answer",
    "decode_claim_request",
    "encode_claim_answer",
    "encode_claim_error",
    "encode_claim_request",
]

KEYS_PROTOCOL: Final = "/hearthmesh/keys/0"
MAX_CLAIM_FRAME_BYTES: Final = 1024
"""An answer is about 300 bytes; a REQUEST 36."""
_REQUEST: Final = 1
_ANSWER: Final = 2
_ERROR: Final = 3
_MAX_ERROR_TEXT: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimAnswer:
    """The encoded bundle and one-time key (None: the pool is empty; use the fallback key)."""

    bundle: bytes
    one_time_key: bytes | None


def encode_claim_request(device: DeviceId) -> bytes:
    """[1, device]."""
    return encode_canonical([_REQUEST, device])


def decode_claim_request(data: bytes) -> DeviceId:
    """The device a REQUEST asks keys of. Raises MalformedMessage (TooLarge past the bound)."""
    match decode_canonical(data, max_bytes=MAX_CLAIM_FRAME_BYTES):
        case [1, bytes() as device] if len(device) == KEY_BYTES:
            return DeviceId(device)
    raise MalformedMessage("a key claim is [1, device]")


def encode_claim_answer(answer: ClaimAnswer) -> bytes:
    """[2, bundle, one-time key | null]."""
    return encode_canonical([_ANSWER, answer.bundle, answer.one_time_key])


def encode_claim_error(error: HearthError) -> bytes:
    """[3, code, message]: the refusal; the server closes the stream after it."""
    text = str(error)[:_MAX_ERROR_TEXT].encode("ascii", "replace").decode("ascii")
    return encode_canonical([_ERROR, int(error.code), text])


def decode_claim_answer(data: bytes) -> ClaimAnswer | ProtocolErrorFrame:
    """Parse an answer frame (structure only; `check_claim_answer` checks the keys).

    Raises:
        MalformedMessage: not ANSWER or ERROR (TooLarge past the bound).
    """
    match decode_canonical(data, max_bytes=MAX_CLAIM_FRAME_BYTES):
        case [2, bytes() as bundle, bytes() | None as one_time_key]:
            return ClaimAnswer(bundle=bundle, one_time_key=one_time_key)
        case [3, int() as code, str() as message] if code >= 0 and len(message) <= 256:
            return ProtocolErrorFrame(code=code, message=message)
    raise MalformedMessage("a key claim answer is [2, bundle, key | null] or [3, code, text]")


def check_claim_answer(
    answer: ClaimAnswer, device: DeviceId
) -> tuple[KeyBundle, OneTimeKey | None]:
    """The verified keys of `device` in an answer.

    Raises:
        MalformedMessage / UnsupportedVersion: a key does not decode.
        BadSignature: a key is not signed by its device.
        KeyMismatch: a key of another device than the one asked for.
    """
    bundle = decode_key_bundle(answer.bundle)
    one_time_key = None if answer.one_time_key is None else decode_one_time_key(answer.one_time_key)
    if bundle.device != device or (one_time_key is not None and one_time_key.device != device):
        raise KeyMismatch("the answer holds keys of another device than the one asked for")
    verify_key_bundle(bundle)
    if one_time_key is not None:
        verify_one_time_key(one_time_key)
    return bundle, one_time_key
