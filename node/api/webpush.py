"""Web Push message encryption (RFC 8291, aes128gcm of RFC 8188) and VAPID (RFC 8292).

Written on `cryptography` alone: pywebpush is synchronous (requests), and the whole scheme is
one ECDH, three HKDFs, one AES-GCM and one ES256 signature.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hearthmesh.protocol.errors import MalformedMessage

__all__ = [
    "RECORD_SIZE",
    "VapidKey",
    "b64url",
    "b64url_decode",
    "decrypt_webpush",
    "encrypt_webpush",
    "public_bytes",
]

RECORD_SIZE: Final = 4096
"""rs of the aes128gcm header; one record carries the whole (small) payload."""
_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 65  # uncompressed P-256 point
_VAPID_LIFETIME_S: Final = 12 * 3600  # RFC 8292 §2: at most 24 h


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Raises MalformedMessage."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise MalformedMessage("not base64url") from None


def public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed point (65 bytes) of a P-256 key."""
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _keys(
    ecdh: bytes, auth: bytes, salt: bytes, ua_public: bytes, as_public: bytes
) -> tuple[bytes, bytes]:
    # RFC 8291 §3.4: the auth secret and both public keys go into the IKM.
    ikm = _hkdf(auth, ecdh, b"WebPush: info\x00" + ua_public + as_public, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    return cek, nonce


def encrypt_webpush(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    salt: bytes,
    sender_key: ec.EllipticCurvePrivateKey,
) -> bytes:
    """Encrypt a push message for one subscription (RFC 8291 §3.4, one record).

    Args:
        ua_public: the subscription's `p256dh` key (65 bytes).
        auth_secret: the subscription's `auth` secret (16 bytes).
        salt: 16 random bytes, fresh for every message.
        sender_key: a fresh ephemeral P-256 key, used for this message only.

    Raises:
        MalformedMessage: a key of the wrong size or not on the curve.
    """
    if len(ua_public) != _KEY_BYTES or len(auth_secret) != 16 or len(salt) != _SALT_BYTES:
        raise MalformedMessage("p256dh is 65 bytes, auth 16, salt 16")
    if len(plaintext) + 17 > RECORD_SIZE:
        raise MalformedMessage("push payload too long for one record")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    except ValueError:
        raise MalformedMessage("p256dh is not a P-256 point") from None
    as_public = public_bytes(sender_key)
    cek, nonce = _keys(
        sender_key.exchange(ec.ECDH(), peer), auth_secret, salt, ua_public, as_public
    )
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: last record
    header = salt + struct.pack(">IB", RECORD_SIZE, _KEY_BYTES) + as_public
    return header + ciphertext


def decrypt_webpush(body: bytes, ua_key: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """What a user agent does with a push message (used by tests and local receivers).

    Raises:
        MalformedMessage: the header, key or tag is wrong.
    """
    if len(body) < _SALT_BYTES + 5 + _KEY_BYTES + 17:
        raise MalformedMessage("push message too short")
    salt = body[:_SALT_BYTES]
    _, idlen = struct.unpack(">IB", body[_SALT_BYTES : _SALT_BYTES + 5])
    as_public = body[_SALT_BYTES + 5 : _SALT_BYTES + 5 + idlen]
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
        cek, nonce = _keys(
            ua_key.exchange(ec.ECDH(), peer), auth_secret, salt, public_bytes(ua_key), as_public
        )
        record = AESGCM(cek).decrypt(nonce, body[_SALT_BYTES + 5 + idlen :], None)
    except (ValueError, InvalidTag):
        raise MalformedMessage("push message does not decrypt") from None
    return record.rstrip(b"\x00")[:-1]  # strip padding, then the 0x02 delimiter


@dataclass(frozen=True, slots=True)
class VapidKey:
    """The node's VAPID signing key (RFC 8292): identifies this application server."""

    private: ec.EllipticCurvePrivateKey

    @classmethod
    def from_bytes(cls, value: bytes) -> VapidKey:
        """From the 32-byte private scalar."""
        return cls(ec.derive_private_key(int.from_bytes(value, "big"), ec.SECP256R1()))

    def to_bytes(self) -> bytes:
        return self.private.private_numbers().private_value.to_bytes(32, "big")

    @property
    def public_key(self) -> str:
        """The applicationServerKey a browser subscribes with (base64url, uncompressed)."""
        return b64url(public_bytes(self.private))

    def authorization(self, endpoint: str, *, now_s: int, subject: str) -> str:
        """The `Authorization: vapid t=..., k=...` header value for `endpoint` (§3)."""
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": now_s + _VAPID_LIFETIME_S,
            "sub": subject,
        }
        header = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        der = self.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return f"vapid t={header}.{payload}.{signature}, k={self.public_key}"
